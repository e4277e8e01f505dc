//! `anonymise`: truncates or pseudonymises IP addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, InlineStr, Record, SharedStr, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::setting_error;

/// Replaces an IP address with an anonymised one, in the representation it came in: text
/// stays text (`Str`, `Shared` becomes `Str`, `Bytes` stay bytes), an `Ip` stays an `Ip`.
///
/// The first `ipv4_prefix` / `ipv6_prefix` bits are always kept as they are. The other
/// bits are
/// - `mode = "truncate"`: set to zero (`10.1.2.3` → `10.1.2.0` with the default /24);
/// - `mode = "keyed"`: pseudonymised with a secret key, Crypto-PAn style: bit *i* of the
///   output is bit *i* of the input XOR one bit of SipHash-2-4 keyed with `key` over the
///   first *i* bits of the input (its family and *i* included). Equal addresses map to
///   equal outputs, two addresses sharing exactly their first *k* bits map to outputs
///   sharing exactly their first *k* bits (subnets stay subnets), and without the key the
///   mapping can be neither computed nor reversed. Set the prefixes to 0 to pseudonymise
///   the whole address; with the defaults the /24 (/48) stays readable, as in truncate
///   mode, and only hosts are pseudonymised (still told apart, unlike truncate).
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are treated as the IPv4 address they
/// carry (`ipv4_prefix` applies, the output is mapped again), so a client seen over both
/// socket families gets one pseudonym. Text such as `10.1.2.3:80` or `fe80::1%eth0` is
/// not an address.
///
/// The key is given by exactly one of `key`, `key_file` (its content, without a final
/// newline) or `key_env` (an environment variable): at least 16 bytes, ideally random
/// (`openssl rand -hex 32`). It is hashed into a 128-bit SipHash key; it is not stretched
/// like a password, so do not use a guessable phrase.
///
/// An absent or null field is passed on unchanged. Any other value that is not an address
/// follows `on_error`, whose default here is `drop`: an address that cannot be anonymised
/// must not slip through in clear (with `keep`, it does). The reason never quotes the value.
///
/// Keyed mode keeps recent results in a 4096-entry cache, so repeated clients cost a
/// lookup rather than one SipHash per pseudonymised bit.
///
/// ```toml
/// [[train.cog]]
/// type = "anonymise"
/// field = "client"
/// mode = "keyed"
/// key_file = "/etc/deadbeat/anon.key"
/// ipv4_prefix = 16
/// ipv6_prefix = 32
/// ```
///
/// From Rust, over any datum, with a getter of the address and an [`OnError`]
/// ([`on_error::for_datum`] reads `on_error` for any datum):
/// `Anonymise::from_settings(&AnonymiseSettings { mode: AnonymiseMode::Keyed, key: Some(secret), ..Default::default() }, field, on_error)`.
pub struct Anonymise<D> {
    field: MutGetter<D, Value>,
    anon: Anonymiser,
    on_error: OnError<D>,
    field_name: String,
}

/// The descriptor of `anonymise`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "anonymise",
    kind: CogKind::Transform,
    summary: "truncates or pseudonymises (keyed, prefix-preserving) the IP address in a field",
    params: AnonymiseSettings::PARAMS,
    fields: &[(
        "error",
        "why the value could not be anonymised (on_error = keep or train:NAME)",
    )],
    build,
};

crate::choice! {
    /// How `anonymise` changes the bits after the prefix.
    pub enum AnonymiseMode { Truncate = "truncate", Keyed = "keyed" }
}

crate::settings! {
    /// Settings of `anonymise`.
    pub struct AnonymiseSettings {
        /// dotted path of the address (text or ip)
        field: String = "client",
        /// truncate: zero the bits after the prefix; keyed: pseudonymise them with `key`, prefix-preserving
        mode: AnonymiseMode = "truncate",
        /// leading bits of IPv4 addresses kept as they are (0-32)
        ipv4_prefix: i64 = "24",
        /// leading bits of IPv6 addresses kept as they are (0-128)
        ipv6_prefix: i64 = "48",
        /// keyed mode: the secret, at least 16 bytes
        key: Option<String>,
        /// keyed mode: file holding the secret (a final newline is ignored)
        key_file: Option<PathBuf>,
        /// keyed mode: environment variable holding the secret
        key_env: Option<String>,
        /// value that is not an IP address: drop | keep (passes it on in clear, reason in `error`) | train:NAME
        on_error: String = "drop",
    }
}

/// Shortest secret accepted: below 128 bits a key could be searched for.
pub const MIN_KEY_BYTES: usize = 16;

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: AnonymiseSettings = p.settings()?;
    let field = record::field_mut(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    // A key file is named relative to the configuration.
    s.key_file = s
        .key_file
        .as_deref()
        .map(|f| p.resolve(&f.to_string_lossy()));
    let anon = Anonymiser::from_settings(&s).map_err(|e| setting_error(p, e))?;
    let on_error = on_error::from_settings(
        &OnErrorSettings {
            on_error: s.on_error.clone(),
        },
        p,
        cx,
    )?;
    Ok(Box::new(Anonymise::new(field, anon, on_error, &s.field)))
}

/// A prefix length given under `key`, at most `max` bits.
fn prefix(key: &'static str, n: i64, max: u8) -> Result<u8, SettingError> {
    match u8::try_from(n) {
        Ok(bits) if bits <= max => Ok(bits),
        _ => Err(SettingError::new(
            key,
            format!("expected 0 to {max} bits, found {n}"),
        )),
    }
}

/// The secret of keyed mode, from the one source given.
fn secret(s: &AnonymiseSettings) -> Result<(&'static str, Vec<u8>), SettingError> {
    let given: Vec<&'static str> = [
        ("key", s.key.is_some()),
        ("key_file", s.key_file.is_some()),
        ("key_env", s.key_env.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    match (given.as_slice(), s.mode) {
        ([], AnonymiseMode::Keyed) => Err(SettingError::new(
            // None of the three is given: the configuration reports it about the cog.
            "key",
            "mode = \"keyed\" needs one of `key`, `key_file` or `key_env`",
        )),
        ([_, second, ..], AnonymiseMode::Keyed) => Err(SettingError::new(
            second,
            "give only one of `key`, `key_file` and `key_env`",
        )),
        ([first, ..], AnonymiseMode::Truncate) => Err(SettingError::new(
            first,
            "a key is used only with mode = \"keyed\"",
        )),
        (_, AnonymiseMode::Truncate) => Ok(("", Vec::new())),
        ([one], AnonymiseMode::Keyed) => {
            let key = match (&s.key, &s.key_file, &s.key_env) {
                (Some(k), _, _) => k.as_bytes().to_vec(),
                (_, Some(path), _) => {
                    let mut k = std::fs::read(path).map_err(|e| {
                        SettingError::new(
                            "key_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    if k.last() == Some(&b'\n') {
                        k.pop();
                        if k.last() == Some(&b'\r') {
                            k.pop();
                        }
                    }
                    k
                }
                (_, _, Some(var)) => std::env::var_os(var)
                    .ok_or_else(|| {
                        SettingError::new(
                            "key_env",
                            format!("environment variable {var} is not set"),
                        )
                    })?
                    .into_encoded_bytes(),
                (None, None, None) => Vec::new(),
            };
            Ok((one, key))
        }
    }
}

impl<D: 'static> Anonymise<D> {
    /// An `anonymise` made from its settings: `field` reaches the address, failures go to
    /// `on_error` (which `s.on_error` describes: see [`on_error::for_datum`]). A
    /// relative `key_file` is read from the current directory.
    pub fn from_settings(
        s: &AnonymiseSettings,
        field: MutGetter<D, Value>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        let anon = Anonymiser::from_settings(s)?;
        Ok(Anonymise::new(field, anon, on_error, &s.field))
    }

    /// Anonymises the value `field` reaches; failures go to `on_error`, and
    /// `field_name` names the field in their reasons.
    pub fn new(
        field: MutGetter<D, Value>,
        anon: Anonymiser,
        on_error: OnError<D>,
        field_name: &str,
    ) -> Self {
        Anonymise {
            field,
            anon,
            on_error,
            field_name: field_name.to_string(),
        }
    }
}

impl<D: 'static> Cog<D> for Anonymise<D> {
    fn name(&self) -> &str {
        "anonymise"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        match anonymise(&mut d, &self.field, &mut self.anon) {
            Ok(()) => out.push(d),
            Err(e) => {
                let why = format_args!("field {:?}: {e}", self.field_name);
                self.on_error.fail(d, "anonymise", &why, out, cx);
            }
        }
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let (field, anon) = (&self.field, &mut self.anon);
        let (field_name, on_error) = (&self.field_name, &mut self.on_error);
        out.change_each(
            batch,
            |d| anonymise(d, field, anon),
            |d, e, out| {
                let why = format_args!("field {field_name:?}: {e}");
                on_error.fail(d, "anonymise", &why, out, cx);
            },
        );
    }
}

/// Anonymises the address `field` reaches in `d`, in place; a missing or null one is
/// left alone.
#[inline]
fn anonymise<D>(
    d: &mut D,
    field: &MutGetter<D, Value>,
    anon: &mut Anonymiser,
) -> Result<(), NotAnAddress> {
    match field.get_mut(d) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => anon.value(v),
    }
}

impl<D> fmt::Debug for Anonymise<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anonymise")
            .field("field", &self.field_name)
            .field("anon", &self.anon)
            .finish()
    }
}

/// Why a value could not be anonymised; never quotes the value, which may be personal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnAddress(&'static str);

impl fmt::Display for NotAnAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an IP address (a {} value)", self.0)
    }
}

impl std::error::Error for NotAnAddress {}

const CACHE_SLOTS: usize = 4096;

#[derive(Clone, Copy, Default)]
struct Slot {
    used: bool,
    input: u128,
    output: u128,
}

struct Keyed {
    k0: u64,
    k1: u64,
    /// Direct-mapped by address (IPv4 as mapped IPv6): the mapping is a pure function, so
    /// a stale slot is only ever overwritten, never wrong.
    cache: Box<[Slot]>,
}

/// The address transformation of `anonymise`, usable on its own.
pub struct Anonymiser {
    v4_prefix: u8,
    v6_prefix: u8,
    keyed: Option<Keyed>,
    /// Where the text of an address is written before it is stored.
    scratch: Vec<u8>,
}

impl fmt::Debug for Anonymiser {
    // The key stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anonymiser")
            .field("v4_prefix", &self.v4_prefix)
            .field("v6_prefix", &self.v6_prefix)
            .field("keyed", &self.keyed.is_some())
            .finish()
    }
}

/// Mask of the first `bits` bits of a 32-bit word.
#[inline]
fn mask32(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

/// Mask of the first `bits` bits of a 128-bit word.
#[inline]
fn mask128(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

impl Anonymiser {
    /// The transformation `s` describes (mode, prefixes, key); `on_error` and `field`
    /// are the cog's.
    pub fn from_settings(s: &AnonymiseSettings) -> Result<Anonymiser, SettingError> {
        let v4 = prefix("ipv4_prefix", s.ipv4_prefix, 32)?;
        let v6 = prefix("ipv6_prefix", s.ipv6_prefix, 128)?;
        match secret(s)? {
            (at, key) if s.mode == AnonymiseMode::Keyed => {
                Anonymiser::keyed(v4, v6, &key).map_err(|m| SettingError::new(at, m))
            }
            _ => Ok(Anonymiser::truncate(v4, v6)),
        }
    }

    /// Zeroes all but the first `v4_prefix` (at most 32) / `v6_prefix` (at most 128) bits.
    pub fn truncate(v4_prefix: u8, v6_prefix: u8) -> Anonymiser {
        Anonymiser {
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
            keyed: None,
            scratch: Vec::new(),
        }
    }

    /// Pseudonymises all but the first `v4_prefix` / `v6_prefix` bits with `key` (at
    /// least [`MIN_KEY_BYTES`]); see [`Anonymise`] for the construction.
    pub fn keyed(v4_prefix: u8, v6_prefix: u8, key: &[u8]) -> Result<Anonymiser, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; give at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        }
        // Two fixed, distinct keys turn a secret of any length into 128 key bits.
        let k0 = siphash24(0x6465_6164_6265_6174, 0x616e_6f6e_796d_6973, key);
        let k1 = siphash24(0x7072_6566_6978_2d70, 0x7265_7365_7276_696e, key);
        Ok(Anonymiser {
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
            keyed: Some(Keyed {
                k0,
                k1,
                cache: vec![Slot::default(); CACHE_SLOTS].into_boxed_slice(),
            }),
            scratch: Vec::new(),
        })
    }

    /// The anonymised address.
    #[inline]
    pub fn ip(&mut self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => IpAddr::V4(self.v4(a)),
            IpAddr::V6(a) => IpAddr::V6(match a.to_ipv4_mapped() {
                Some(v4) => self.v4(v4).to_ipv6_mapped(),
                None => self.v6(a),
            }),
        }
    }

    /// The anonymised IPv4 address.
    #[inline]
    pub fn v4(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let x = u32::from(a);
        let prefix = self.v4_prefix;
        match &mut self.keyed {
            None => Ipv4Addr::from(x & mask32(prefix)),
            Some(k) => {
                let tagged = u128::from(a.to_ipv6_mapped());
                let out = k.cached(tagged, |k0, k1| {
                    let mut flip = 0u32;
                    for i in prefix..32 {
                        let mut msg = [0u8; 16];
                        msg[0] = 4;
                        msg[1] = i;
                        msg[8..12].copy_from_slice(&(x & mask32(i)).to_be_bytes());
                        let bit = (siphash24(k0, k1, &msg) & 1) as u32;
                        flip |= bit << (31 - i);
                    }
                    u128::from(x ^ flip)
                });
                Ipv4Addr::from(out as u32)
            }
        }
    }

    /// The anonymised IPv6 address (IPv4-mapped ones included, taken as 128 bits).
    #[inline]
    pub fn v6(&mut self, a: Ipv6Addr) -> Ipv6Addr {
        let x = u128::from(a);
        let prefix = self.v6_prefix;
        match &mut self.keyed {
            None => Ipv6Addr::from(x & mask128(prefix)),
            Some(k) => Ipv6Addr::from(k.cached(x, |k0, k1| {
                let mut flip = 0u128;
                for i in prefix..128 {
                    let mut msg = [0u8; 24];
                    msg[0] = 6;
                    msg[1] = i;
                    msg[8..24].copy_from_slice(&(x & mask128(i)).to_be_bytes());
                    let bit = u128::from((siphash24(k0, k1, &msg) & 1) as u8);
                    flip |= bit << (127 - i);
                }
                x ^ flip
            })),
        }
    }

    /// Anonymises an address held in `v`, in place and in the same representation.
    pub fn value(&mut self, v: &mut Value) -> Result<(), NotAnAddress> {
        match v {
            Value::Ip(ip) => *ip = self.ip(*ip),
            Value::Str(s) => {
                let ip = record::parse_ip(s.as_bytes()).ok_or(NotAnAddress("string"))?;
                let mut text = std::mem::take(s).into_bytes();
                text.clear();
                record::write_ip(&mut text, &self.ip(ip));
                // Only ASCII is written.
                *s = String::from_utf8(text).unwrap_or_default();
            }
            // Short text (nearly every address) is rewritten where it lies.
            Value::Shared(SharedStr::Inline(short)) => {
                let text = self.text_of(short.as_str().as_bytes())?;
                if !short.set(text) {
                    *v = Value::Str(crate::record::pool::text(text));
                }
            }
            Value::Shared(s) => {
                let text = self.text_of(s.as_bytes())?;
                *v = match InlineStr::new(text) {
                    Some(short) => Value::Shared(SharedStr::Inline(short)),
                    None => Value::Str(crate::record::pool::text(text)),
                };
            }
            Value::Bytes(b) => {
                let ip = record::parse_ip(b).ok_or(NotAnAddress("string"))?;
                b.clear();
                record::write_ip(b, &self.ip(ip));
            }
            other => return Err(NotAnAddress(other.type_name())),
        }
        Ok(())
    }
}

impl Anonymiser {
    /// The anonymised form of the address `text`, written in `scratch`.
    fn text_of(&mut self, text: &[u8]) -> Result<&str, NotAnAddress> {
        let ip = record::parse_ip(text).ok_or(NotAnAddress("string"))?;
        let ip = self.ip(ip);
        self.scratch.clear();
        record::write_ip(&mut self.scratch, &ip);
        // Only ASCII is written.
        Ok(std::str::from_utf8(&self.scratch).unwrap_or_default())
    }
}

impl Keyed {
    #[inline]
    fn cached(&mut self, input: u128, compute: impl FnOnce(u64, u64) -> u128) -> u128 {
        let h = ((input >> 64) as u64 ^ input as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> (64 - CACHE_SLOTS.trailing_zeros())) as usize;
        if let Some(slot) = self.cache.get(i)
            && slot.used
            && slot.input == input
        {
            return slot.output;
        }
        let output = compute(self.k0, self.k1);
        if let Some(slot) = self.cache.get_mut(i) {
            *slot = Slot {
                used: true,
                input,
                output,
            };
        }
        output
    }
}

/// SipHash-2-4 (Aumasson and Bernstein) of `msg` under the key `(k0, k1)`: a PRF with a
/// 128-bit key, written out here to avoid a dependency (`std`'s is deprecated).
#[inline]
pub fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bits(a: IpAddr) -> (u128, u8) {
        match a {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Length of the common prefix of two addresses of one family.
    fn common(a: IpAddr, b: IpAddr) -> u32 {
        let ((x, w), (y, _)) = (bits(a), bits(b));
        (x ^ y).leading_zeros().min(u32::from(w))
    }

    #[test]
    fn siphash_matches_the_reference() {
        #[allow(deprecated)]
        fn std_sip(k0: u64, k1: u64, m: &[u8]) -> u64 {
            use std::hash::Hasher;
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(m);
            h.finish()
        }
        let msg: Vec<u8> = (0..40).collect();
        for n in 0..msg.len() {
            assert_eq!(siphash24(7, 9, &msg[..n]), std_sip(7, 9, &msg[..n]), "{n}");
        }
    }

    #[test]
    fn truncate_v4_and_v6() {
        let cases = [
            (24, 48, "10.1.2.3", "10.1.2.0"),
            (16, 48, "10.1.2.3", "10.1.0.0"),
            (0, 48, "10.1.2.3", "0.0.0.0"),
            (32, 48, "10.1.2.3", "10.1.2.3"),
            (20, 48, "192.168.255.255", "192.168.240.0"),
            (24, 48, "2001:db8:abcd:12::1", "2001:db8:abcd::"),
            (24, 64, "2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd:12::"),
            (24, 0, "2001:db8::1", "::"),
            (24, 128, "2001:db8::1", "2001:db8::1"),
            (24, 52, "2001:db8:abcd:ffff::", "2001:db8:abcd:f000::"),
            // IPv4-mapped: the IPv4 prefix applies, the result stays mapped.
            (24, 48, "::ffff:10.1.2.3", "::ffff:10.1.2.0"),
        ];
        for (v4, v6, input, want) in cases {
            let mut a = Anonymiser::truncate(v4, v6);
            assert_eq!(a.ip(ip(input)), ip(want), "{input} /{v4} /{v6}");
        }
    }

    #[test]
    fn representation_is_kept() {
        let mut a = Anonymiser::truncate(24, 48);
        let mut v = Value::Str("10.1.2.34".into());
        a.value(&mut v).unwrap();
        assert!(matches!(&v, Value::Str(s) if s == "10.1.2.0"));
        let mut v = Value::Shared("2001:db8:1:2::3".into());
        a.value(&mut v).unwrap();
        assert!(matches!(&v, Value::Shared(s) if &**s == "2001:db8:1::"));
        let mut v = Value::Shared(SharedStr::short("10.1.2.34"));
        a.value(&mut v).unwrap();
        assert!(matches!(&v, Value::Shared(SharedStr::Inline(s)) if s.as_str() == "10.1.2.0"));
        let mut v = Value::Bytes(b"192.0.2.77".to_vec());
        a.value(&mut v).unwrap();
        assert!(matches!(&v, Value::Bytes(b) if b == b"192.0.2.0"));
        let mut v = Value::Ip(ip("192.0.2.77"));
        a.value(&mut v).unwrap();
        assert!(matches!(v, Value::Ip(x) if x == ip("192.0.2.0")));
    }

    #[test]
    fn non_addresses_are_refused_without_quoting_them() {
        let mut a = Anonymiser::truncate(24, 48);
        for mut v in [
            Value::from("10.1.2.3:80"),
            Value::from(" 10.1.2.3"),
            Value::from("fe80::1%eth0"),
            Value::from("secret-name"),
            Value::Bytes(b"\xff10.0.0.1".to_vec()),
            Value::Int(167_772_161),
        ] {
            let before = v.clone();
            let e = a.value(&mut v).unwrap_err();
            assert_eq!(v, before, "a refused value is left alone");
            assert!(!e.to_string().contains("10.1"), "{e}");
        }
    }

    /// `p` with bit `k` flipped (none when `k` is the width) and the bits after it
    /// replaced by `noise`: the two share exactly their first `k` bits.
    fn sibling(p: u128, k: u32, width: u32, noise: u128) -> u128 {
        if k >= width {
            return p;
        }
        let top = 128 - width;
        let after = u128::MAX.checked_shr(top + k + 1).unwrap_or(0) << top;
        (p ^ (1u128 << (127 - k))) & !after | noise & after
    }

    #[test]
    fn keyed_preserves_prefixes_exactly() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            // xorshift: reproducible addresses and shared prefix lengths.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (v4p, v6p) in [(0, 0), (24, 48), (8, 17)] {
            let mut a = Anonymiser::keyed(v4p, v6p, KEY).unwrap();
            for _ in 0..2000 {
                let k = (next() % 33) as u32;
                let p = u128::from(next()) << 96;
                let q = sibling(p, k, 32, u128::from(next()) << 64);
                let to_ip = |b: u128| IpAddr::V4(Ipv4Addr::from((b >> 96) as u32));
                let (p, q) = (to_ip(p), to_ip(q));
                assert_eq!(common(p, q), k);
                let (ap, aq) = (a.ip(p), a.ip(q));
                assert_eq!(common(ap, aq), k, "{p} {q} -> {ap} {aq}");
                assert!(common(p, ap) >= u32::from(v4p), "clear prefix kept");
            }
            for _ in 0..500 {
                let k = (next() % 129) as u32;
                let p = u128::from(next()) << 64 | u128::from(next());
                let q = sibling(p, k, 128, u128::from(next()) << 64 | u128::from(next()));
                let (p, q) = (IpAddr::V6(p.into()), IpAddr::V6(q.into()));
                if p.to_canonical() != p || q.to_canonical() != q {
                    continue; // IPv4-mapped: covered as IPv4.
                }
                let (ap, aq) = (a.ip(p), a.ip(q));
                assert_eq!(common(ap, aq), k, "{p} {q} -> {ap} {aq}");
                assert!(common(p, ap) >= u32::from(v6p), "clear prefix kept");
            }
        }
    }

    #[test]
    fn keyed_is_stable_and_depends_on_the_key() {
        let mut a = Anonymiser::keyed(0, 0, KEY).unwrap();
        let mut b = Anonymiser::keyed(0, 0, KEY).unwrap();
        let mut c = Anonymiser::keyed(0, 0, b"another-key-of-enough-bytes").unwrap();
        let mut differ = 0;
        for i in 0..256u32 {
            let x = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i << 8 | i));
            let first = a.ip(x);
            assert_eq!(a.ip(x), first, "cached result");
            assert_eq!(b.ip(x), first, "same key, same mapping");
            differ += usize::from(c.ip(x) != first);
        }
        assert!(differ > 250, "{differ}");
        // Mapped IPv4 and plain IPv4 get the same pseudonym.
        let plain = a.ip(ip("198.51.100.7"));
        let IpAddr::V4(plain4) = plain else { panic!() };
        assert_eq!(
            a.ip(ip("::ffff:198.51.100.7")),
            IpAddr::V6(plain4.to_ipv6_mapped())
        );
        assert!(Anonymiser::keyed(24, 48, b"short").is_err());
    }

    #[test]
    fn keyed_keeps_the_clear_prefix_and_changes_hosts() {
        let mut a = Anonymiser::keyed(24, 48, KEY).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..=255u8 {
            let IpAddr::V4(out) = a.ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, i))) else {
                panic!()
            };
            assert_eq!(out.octets()[..3], [10, 1, 2]);
            seen.insert(out);
        }
        // Hosts of a /24 are permuted: still told apart.
        assert_eq!(seen.len(), 256);
        let input = ip("2001:db8:abcd:1234::1");
        let out = a.ip(input);
        assert!(common(out, input) >= 48);
        assert_ne!(out, input);
    }
}
