use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::ip::write_ipv6;
use super::json_parse::MAX_DEPTH;
use super::json_render::{ESCAPE, masks, masks_swar, masks16, scan, short_words};
use super::key::{SEGMENTS, slot_of};
use super::*;

#[test]
fn interned_text_is_kept_once_and_compares_as_text() {
    let a = SharedStr::interned("/var/log/interned-test.log");
    let b = SharedStr::interned(&String::from("/var/log/interned-test.log"));
    match (&a, &b) {
        (SharedStr::Interned(x), SharedStr::Interned(y)) => assert!(std::ptr::eq(*x, *y)),
        _ => panic!("not interned: {a:?} {b:?}"),
    }
    assert_eq!(a, SharedStr::from("/var/log/interned-test.log"));
    assert_eq!(
        Value::Shared(a.clone()),
        Value::Str("/var/log/interned-test.log".into())
    );
    assert_eq!(&*a, "/var/log/interned-test.log");
}

#[test]
fn short_text_is_held_inline_whole() {
    let text = "ab\u{e9}cd\u{1F600}efghijklmnopqrstuvwxyz0123456789";
    for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let s = &text[..end];
        let shared = SharedStr::short(s);
        assert_eq!(shared.as_str(), s);
        assert_eq!(shared.clone().as_str(), s);
        match (&shared, InlineStr::new(s)) {
            (SharedStr::Inline(i), Some(_)) => {
                assert!(s.len() <= InlineStr::CAPACITY);
                assert_eq!(i.as_str(), s);
            }
            (SharedStr::Counted(_), None) => assert!(s.len() > InlineStr::CAPACITY),
            (other, inline) => panic!("{s:?}: {other:?} / inline {:?}", inline.is_some()),
        }
        assert_eq!(Value::Shared(shared), Value::Str(s.to_string()));
    }
}

#[test]
fn interned_values_are_bounded_in_count_and_length() {
    let first = SharedStr::interned_value("Mozilla/5.0 (interned-value-test)");
    let again = SharedStr::interned_value("Mozilla/5.0 (interned-value-test)");
    match (&first, &again) {
        (Some(SharedStr::Interned(x)), Some(SharedStr::Interned(y))) => {
            assert!(std::ptr::eq(*x, *y))
        }
        _ => panic!("not interned: {first:?} {again:?}"),
    }
    let long = "x".repeat(MAX_INTERNED_VALUE_LEN + 1);
    assert!(SharedStr::interned_value(&long).is_none());
    // Other tests intern values too: count the refusals, not the insertions.
    let refused = (0..=MAX_INTERNED_VALUES)
        .filter(|i| SharedStr::interned_value(&format!("budget-test-{i}")).is_none())
        .count();
    assert!(
        refused >= 1,
        "the budget of {MAX_INTERNED_VALUES} values was not enforced"
    );
    assert!(
        SharedStr::interned_value("Mozilla/5.0 (interned-value-test)").is_some(),
        "a kept value is still found once the budget is spent"
    );
}

#[test]
fn parse_ip_agrees_with_the_standard_parser() {
    let fixed = [
        "1.2.3.4",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.",
        ".1.2.3.4",
        "1..2.3",
        "1.2.3.4.5",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.-4",
        "1.2.3.+4",
        "1000.1.1.1",
        "10.0.0.0",
        "::1",
        "::",
        "fe80::1%eth0",
        "2001:db8::1",
        "::ffff:1.2.3.4",
        "",
        "a.b.c.d",
        "1.2.3.4a",
        "0.00.0.0",
    ];
    let mut inputs: Vec<Vec<u8>> = fixed.iter().map(|s| s.as_bytes().to_vec()).collect();
    // And random strings over the characters that matter.
    let alphabet = b"0123456789.:af";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 17) as usize;
        inputs.push(
            (0..len)
                .map(|i| alphabet[((x >> (i * 3)) % alphabet.len() as u64) as usize])
                .collect(),
        );
    }
    // IPv6-like strings: few symbols, so that valid forms come up often.
    let alphabet = b"0:1::fA";
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 2 + (x % 24) as usize;
        let mut y = x;
        inputs.push(
            (0..len)
                .map(|_| {
                    y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[(y >> 59) as usize % alphabet.len()]
                })
                .collect(),
        );
    }
    for s in [
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
    ] {
        inputs.push(s.as_bytes().to_vec());
    }
    let mut accepted = 0;
    for input in &inputs {
        let std = std::str::from_utf8(input)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok());
        assert_eq!(parse_ip(input), std, "{:?}", String::from_utf8_lossy(input));
        accepted += usize::from(std.is_some());
    }
    assert!(accepted > 1000, "only {accepted} valid inputs tried");
}

#[test]
fn ip_text_is_what_display_writes() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::new();
    for i in 0..50_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Groups are zero half the time, to make runs of every length.
        let mut g = [0u16; 8];
        for (k, slot) in g.iter_mut().enumerate() {
            if x >> (k + 40) & 1 == 1 {
                *slot = (x >> (k * 5)) as u16 & [0xf, 0xff, 0xfff, 0xffff][k % 4];
            }
        }
        if i % 97 == 0 {
            g[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0xffff]);
        }
        let a = Ipv6Addr::from(g);
        out.clear();
        write_ipv6(&mut out, &a);
        assert_eq!(std::str::from_utf8(&out), Ok(a.to_string().as_str()));
        // And IPv4, every octet value in every position over the run.
        let v4 = Ipv4Addr::from((x as u32).rotate_left(i % 32) ^ ((i % 256) * 0x0101_0101));
        out.clear();
        write_ip(&mut out, &IpAddr::V4(v4));
        assert_eq!(std::str::from_utf8(&out), Ok(v4.to_string().as_str()));
    }
}

fn json(v: &Value) -> String {
    let mut out = Vec::new();
    v.write_json(&mut out);
    String::from_utf8(out).expect("rendered JSON is UTF-8")
}

fn parse(s: &str) -> Result<Value, JsonError> {
    Value::parse_json(s.as_bytes())
}

fn ts(t: Timestamp) -> String {
    let mut out = Vec::new();
    t.write_rfc3339(&mut out);
    String::from_utf8(out).expect("timestamp is ASCII")
}

fn map(entries: &[(&str, Value)]) -> Map {
    entries
        .iter()
        .map(|(k, v)| (Key::new(k), v.clone()))
        .collect()
}

fn path(s: &str) -> Path {
    Path::parse(s).expect("valid path")
}

// --- keys -------------------------------------------------------------------------------

#[test]
fn names_from_input_are_refused_once_the_interner_is_full() {
    let known = Key::new("known-name");
    assert_eq!(Key::from_input_within("known-name", 0), Some(known));
    assert_eq!(
        Key::from_input_within("a-name-nobody-interned-yet", 0),
        None
    );
    assert!(Key::try_existing("a-name-nobody-interned-yet").is_none());
    assert!(Key::from_input("a-name-nobody-interned-yet").is_some());
}

#[test]
fn merge_into_top_level_and_target() {
    let mut fields = Map::new();
    let mut r = Record::new();
    r.insert(Key::new("message"), Value::from("x"));
    fields.insert(Key::new("status"), Value::Int(200));
    merge_into(None).merge(&mut r, &mut fields);
    assert!(fields.is_empty());
    fields.insert(Key::new("ip"), Value::from("10.0.0.1"));
    r.insert(Key::new("src"), Value::Int(1));
    merge_into(Some(Path::parse("src").unwrap())).merge(&mut r, &mut fields);
    let mut json = Vec::new();
    r.write_json(&mut json);
    assert_eq!(
        json,
        br#"{"message":"x","status":200,"src":{"ip":"10.0.0.1"}}"#
    );
    assert_eq!(
        bytes_at(Path::parse("message").unwrap()).get(&r),
        Some(&b"x"[..])
    );
    assert_eq!(bytes_at(Path::parse("status").unwrap()).get(&r), None);
}

#[test]
fn merge_from_is_insert_one_by_one() {
    // 150 keys: ids collide in the 64-bit summary, so both the in-place and the
    // false-alarm paths run.
    let keys: Vec<Key> = (0..150)
        .map(|i| Key::new(&format!("merge-key-{i}")))
        .collect();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..2_000 {
        let mut a = Map::new();
        let mut b = Map::new();
        for _ in 0..next(12) {
            a.insert(keys[next(150) as usize], Value::Int(round));
        }
        for i in 0..next(12) {
            b.insert(keys[next(150) as usize], Value::Int(-(i as i64)));
        }
        let mut want = a.clone();
        for (k, v) in b.iter() {
            want.insert(k, v.clone());
        }
        let mut from = b.clone();
        a.merge_from(&mut from);
        assert!(from.is_empty());
        let order = |m: &Map| m.iter().map(|(k, v)| (k, v.clone())).collect::<Vec<_>>();
        assert_eq!(order(&a), order(&want), "round {round}");
    }
}

#[test]
fn shared_text_renders_and_compares_as_text() {
    let shared = Value::from(std::sync::Arc::<str>::from("/var/log/a \"b\".log"));
    assert_eq!(shared.to_string(), r#""/var/log/a \"b\".log""#);
    assert_eq!(shared, Value::Str("/var/log/a \"b\".log".into()));
    assert_eq!(shared.type_name(), "string");
    assert_ne!(shared, Value::Bytes(b"/var/log/a \"b\".log".to_vec()));
    assert_eq!(
        Value::from(std::sync::Arc::<str>::from("::1")).as_ip(),
        Some("::1".parse().unwrap())
    );
}

#[test]
fn keys_intern_and_order_by_name() {
    let a = Key::new("zeta-test-key");
    let b = Key::new("alpha-test-key");
    assert_eq!(a, Key::new("zeta-test-key"));
    assert_ne!(a, b);
    assert_eq!(a.as_str(), "zeta-test-key");
    assert_eq!(a.to_string(), "zeta-test-key");
    assert_eq!(format!("{a:?}"), "Key(\"zeta-test-key\")");
    assert!(b < a);
    assert_eq!(Key::try_existing("zeta-test-key"), Some(a));
    assert_eq!(Key::try_existing("never-interned-key-xyz"), None);
}

#[test]
fn keys_span_segments_and_threads() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..300)
                    .map(|i| {
                        let name = format!("seg-{}-{i}", i % 150);
                        let k = Key::new(&name);
                        assert_eq!(k.as_str(), name, "thread {t}");
                        k
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Vec<Key>> = handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .collect();
    for keys in &all[1..] {
        assert_eq!(keys, &all[0]);
    }
}

#[test]
fn slot_layout() {
    assert_eq!(slot_of(0), (0, 0));
    assert_eq!(slot_of(63), (0, 63));
    assert_eq!(slot_of(64), (1, 0));
    assert_eq!(slot_of(191), (1, 127));
    assert_eq!(slot_of(192), (2, 0));
    assert_eq!(slot_of(u32::MAX).0, SEGMENTS - 1);
}

#[test]
fn key_with_quote_renders_escaped() {
    let m = map(&[("we\"ird\n", Value::Int(1))]);
    assert_eq!(json(&Value::Map(m)), r#"{"we\"ird\n":1}"#);
    // Names too long for the padded copy take the plain one.
    let long = "a-field-name-well-past-thirty-two-bytes-long";
    let m = map(&[
        ("x", Value::Null),
        (long, Value::Int(2)),
        ("", Value::Int(3)),
    ]);
    let text = json(&Value::Map(m.clone()));
    assert_eq!(text, format!(r#"{{"x":null,"{long}":2,"":3}}"#));
    assert_eq!(parse(&text), Ok(Value::Map(m)));
}

#[test]
fn escaped_object_keys_intern_to_the_same_key() {
    let v = parse(r#"{"a\u0062":1,"\u00e9t\u00e9":2}"#).expect("valid");
    let Value::Map(m) = v else {
        panic!("expected a map");
    };
    assert_eq!(m.get(Key::new("ab")), Some(&Value::Int(1)));
    assert_eq!(m.get(Key::new("été")), Some(&Value::Int(2)));
}

// --- rendering --------------------------------------------------------------------------

#[test]
fn renders_every_variant() {
    assert_eq!(json(&Value::Null), "null");
    assert_eq!(json(&Value::Bool(true)), "true");
    assert_eq!(json(&Value::Bool(false)), "false");
    assert_eq!(json(&Value::Int(0)), "0");
    assert_eq!(json(&Value::Int(-42)), "-42");
    assert_eq!(json(&Value::Int(i64::MIN)), "-9223372036854775808");
    assert_eq!(json(&Value::Int(i64::MAX)), "9223372036854775807");
    assert_eq!(json(&Value::Float(1.5)), "1.5");
    assert_eq!(json(&Value::Float(2.0)), "2.0");
    assert_eq!(json(&Value::Float(-0.0)), "-0.0");
    assert_eq!(json(&Value::Float(1e300)), "1e300");
    assert_eq!(json(&Value::Float(1.5e-7)), "1.5e-7");
    assert_eq!(json(&Value::Float(f64::NAN)), "null");
    assert_eq!(json(&Value::Float(f64::INFINITY)), "null");
    assert_eq!(json(&Value::Float(f64::NEG_INFINITY)), "null");
    assert_eq!(json(&Value::from("héllo")), r#""héllo""#);
    assert_eq!(json(&Value::Bytes(b"raw line".to_vec())), r#""raw line""#);
    assert_eq!(
        json(&Value::Time(Timestamp::new(1_795_776_277, 123_000_000, 60))),
        r#""2026-11-27T11:44:37.123+01:00""#
    );
    let v4: IpAddr = "192.168.0.255".parse().expect("ip");
    assert_eq!(json(&Value::Ip(v4)), r#""192.168.0.255""#);
    let v6: IpAddr = "2001:db8::1".parse().expect("ip");
    assert_eq!(json(&Value::Ip(v6)), r#""2001:db8::1""#);
    let net: IpNet = "10.0.0.0/8".parse().expect("net");
    assert_eq!(json(&Value::Net(net)), r#""10.0.0.0/8""#);
    let net6: IpNet = "fe80::/10".parse().expect("net");
    assert_eq!(json(&Value::Net(net6)), r#""fe80::/10""#);
    assert_eq!(json(&Value::List(vec![])), "[]");
    assert_eq!(
        json(&Value::List(vec![Value::Int(1), Value::Null, "x".into()])),
        r#"[1,null,"x"]"#
    );
    assert_eq!(json(&Value::Map(Map::new())), "{}");
    let m = map(&[
        ("a", Value::Int(1)),
        (
            "b",
            Value::Map(map(&[("c", Value::List(vec![Value::Bool(true)]))])),
        ),
    ]);
    assert_eq!(json(&Value::Map(m)), r#"{"a":1,"b":{"c":[true]}}"#);
    assert_eq!(Value::Int(7).to_string(), "7");
}

#[test]
fn escapes_quotes_backslashes_and_controls() {
    let s: String = (0u8..0x20).map(char::from).collect();
    assert_eq!(
        json(&Value::Str(s)),
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\
         \\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\
         \\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
    );
    assert_eq!(
        json(&Value::from("say \"hi\" \\ bye\u{7f}/")),
        "\"say \\\"hi\\\" \\\\ bye\u{7f}/\""
    );
    // Escapes at every position around the 8-byte word boundaries.
    for n in 0..20 {
        let s = format!("{}\"{}", "a".repeat(n), "b".repeat(n));
        assert_eq!(
            json(&Value::Str(s)),
            format!("\"{}\\\"{}\"", "a".repeat(n), "b".repeat(n))
        );
    }
}

#[test]
fn scan_matches_bytewise_scan() {
    // Small LCG so the test needs no dependency.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"ab\"\\\x00\x1f \x7f\x80\xff\xe2\x21\x5b\x5d\x20\x1e";
    for _ in 0..2000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (seed >> 58) as usize;
        let s: Vec<u8> = (0..len)
            .map(|i| {
                let x = seed.rotate_left(i as u32 * 5);
                if x.is_multiple_of(5) {
                    alphabet[(x >> 8) as usize % alphabet.len()]
                } else {
                    b'a' + (x >> 16) as u8 % 26
                }
            })
            .collect();
        for from in 0..=s.len() {
            let naive = (from..s.len())
                .find(|&i| ESCAPE[usize::from(s[i])] != 0)
                .unwrap_or(s.len());
            let got = scan(&s, from);
            assert_eq!(got.at, naive, "{s:?} from {from}");
            assert_eq!(got.ascii, s[from..naive].is_ascii(), "{s:?} from {from}");
        }
        if let Some(chunk) = s.first_chunk::<16>() {
            let special = (0..16)
                .filter(|&i| ESCAPE[usize::from(chunk[i])] != 0)
                .fold(0, |m, i| m | 1 << i);
            let high = (0..16)
                .filter(|&i| chunk[i] >= 0x80)
                .fold(0, |m, i| m | 1 << i);
            assert_eq!(masks16(chunk), (special, high), "{chunk:?}");
            let lo = u64::from_le_bytes(*chunk.first_chunk::<8>().expect("16 bytes"));
            let hi = u64::from_le_bytes(*chunk.last_chunk::<8>().expect("16 bytes"));
            assert_eq!(masks_swar(lo, hi), (special, high), "{chunk:?}");
        }
        if s.len() <= 16 {
            let mut padded = [b' '; 16];
            padded[..s.len()].copy_from_slice(&s);
            let (lo, hi) = short_words(&s);
            assert_eq!([lo.to_le_bytes(), hi.to_le_bytes()].concat(), padded);
        }
    }
    for b in 0..=255u8 {
        let w = u64::from_le_bytes([b; 8]);
        assert_eq!(masks(w, w), masks_swar(w, w), "{b}");
    }
}

/// The plain, obviously right escaper that the fast one must agree with.
fn reference_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn escaping_agrees_with_reference_at_every_length() {
    let pieces = [
        "a", "Z", "\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "€", "😀", " ", "\u{7f}",
    ];
    let mut seed = 7u64;
    for len in 0..70 {
        for _ in 0..40 {
            let mut s = String::new();
            while s.len() < len {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Mostly plain letters, as real text is.
                let i = (seed >> 59) as usize;
                s.push_str(pieces.get(i).copied().unwrap_or("x"));
            }
            let want = reference_json_string(&s);
            assert_eq!(json(&Value::Str(s.clone())), want, "{s:?}");
            assert_eq!(json(&Value::Bytes(s.clone().into_bytes())), want, "{s:?}");
            let mut raw = s.clone().into_bytes();
            raw.push(0xff);
            raw.extend_from_slice(s.as_bytes());
            assert_eq!(
                json(&Value::Bytes(raw.clone())),
                reference_json_string(&String::from_utf8_lossy(&raw)),
                "{raw:?}"
            );
            assert_eq!(parse(&want), Ok(Value::Str(s)));
        }
    }
}

#[test]
fn integers_render_like_display() {
    let mut cases = vec![0, 1, -1, 9, 10, 99, 100, i64::MAX, i64::MIN, i64::MIN + 1];
    for p in 1..19 {
        let n = 10i64.pow(p);
        cases.extend([n - 1, n, n + 1, -n + 1, -n, -n - 1]);
    }
    for n in cases {
        assert_eq!(json(&Value::Int(n)), n.to_string());
        assert_eq!(parse(&n.to_string()), Ok(Value::Int(n)));
    }
}

#[test]
fn invalid_utf8_bytes_become_replacement_chars() {
    let v = Value::Bytes(b"ok \xff\xfe end \xe2\x82 \"q\"".to_vec());
    let out = json(&v);
    assert_eq!(out, "\"ok \u{FFFD}\u{FFFD} end \u{FFFD} \\\"q\\\"\"");
    assert_eq!(
        parse(&out).expect("valid JSON"),
        Value::from("ok \u{FFFD}\u{FFFD} end \u{FFFD} \"q\"")
    );
    assert_eq!(v.as_str(), None);
    assert_eq!(v.as_bytes().map(<[u8]>::len), Some(16));
}

#[test]
fn record_renders_fields_without_id() {
    let mut r = Record::with_capacity(4);
    r.id = 99;
    r.insert(Key::new("msg"), Value::Bytes(b"hello\tworld".to_vec()));
    r.insert(Key::new("n"), Value::Int(3));
    let mut out = b"prefix ".to_vec();
    r.write_json(&mut out);
    assert_eq!(out, b"prefix {\"msg\":\"hello\\tworld\",\"n\":3}");
}

// --- parsing ----------------------------------------------------------------------------

#[test]
fn round_trips_nested_values() {
    let v = Value::Map(map(&[
        ("null", Value::Null),
        ("t", Value::Bool(true)),
        ("f", Value::Bool(false)),
        ("int", Value::Int(-17)),
        ("min", Value::Int(i64::MIN)),
        ("max", Value::Int(i64::MAX)),
        ("float", Value::Float(0.1)),
        ("whole", Value::Float(3.0)),
        ("tiny", Value::Float(5e-324)),
        ("huge", Value::Float(f64::MAX)),
        ("s", Value::from("tab\t \"quote\" \\ \u{1} ünï 😀 \u{7f}")),
        ("empty", Value::from("")),
        (
            "list",
            Value::List(vec![
                Value::List(vec![]),
                Value::Map(Map::new()),
                Value::List(vec![Value::Int(1), Value::Map(map(&[("x", Value::Null)]))]),
            ]),
        ),
        (
            "m",
            Value::Map(map(&[("deep", Value::Map(map(&[("er", 1.into())])))])),
        ),
    ]));
    let text = json(&v);
    assert_eq!(parse(&text), Ok(v.clone()));
    // And with whitespace everywhere it is allowed.
    let spaced = text
        .replace(',', " ,\n ")
        .replace(':', "\t:\r ")
        .replace('[', "[ ")
        .replace('{', " { ");
    // (No string in `v` contains any of the replaced characters.)
    assert_eq!(
        parse(&format!("\n {spaced} \n")).map(|p| json(&p)),
        Ok(text)
    );
}

#[test]
fn parses_escapes_and_surrogates() {
    assert_eq!(
        parse(r#""\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC\ud83d\ude00""#),
        Ok(Value::from("\"\\/\u{8}\u{c}\n\r\tAé€😀"))
    );
    assert_eq!(parse(r#""a\u0000b""#), Ok(Value::from("a\0b")));
    for bad in [
        r#""\ud83d""#,
        r#""\ud83dx""#,
        r#""\ud83d\n""#,
        r#""\ud83d\u0041""#,
        r#""\ude00""#,
        r#""\ude00\ud83d""#,
    ] {
        let e = parse(bad).expect_err(bad);
        assert_eq!(e.msg, "lone surrogate in \\u escape", "{bad}");
    }
}

#[test]
fn parse_errors() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"", 0, "unexpected end of input"),
        (b"   ", 3, "unexpected end of input"),
        (b"{", 1, "unexpected end of input"),
        (b"{\"a\"", 4, "unexpected end of input"),
        (b"{\"a\":", 5, "unexpected end of input"),
        (b"{\"a\":1", 6, "unexpected end of input"),
        (b"[1,", 3, "unexpected end of input"),
        (b"[1", 2, "unexpected end of input"),
        (b"\"abc", 4, "unterminated string"),
        (b"\"abc\\", 5, "unterminated string"),
        (b"\"\\u12", 3, "truncated \\u escape"),
        (b"\"\\x\"", 2, "invalid escape"),
        (b"\"\\u12g4\"", 5, "invalid hex digit in \\u escape"),
        (b"\"a\nb\"", 2, "control character in string"),
        (b"\"\xff\"", 1, "invalid UTF-8 in string"),
        (b"\"ok\\n\xc3\"", 5, "invalid UTF-8 in string"),
        (b"tru", 0, "invalid literal"),
        (b"nul", 0, "invalid literal"),
        (b"True", 0, "expected a JSON value"),
        (b"1 2", 2, "trailing characters after JSON value"),
        (b"{}x", 2, "trailing characters after JSON value"),
        (b"truex", 4, "trailing characters after JSON value"),
        (b"01", 1, "trailing characters after JSON value"),
        (b"[1,]", 3, "expected a JSON value"),
        (b"[1 2]", 3, "expected ',' or ']'"),
        (b"{\"a\":1,}", 7, "expected a string key"),
        (b"{a:1}", 1, "expected a string key"),
        (b"{\"a\" 1}", 5, "expected ':'"),
        (b"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"),
        (b"-", 1, "invalid number"),
        (b"-a", 1, "invalid number"),
        (b"1.", 2, "expected digits after '.'"),
        (b"1.e3", 2, "expected digits after '.'"),
        (b"1e", 2, "expected digits in exponent"),
        (b"1e+", 3, "expected digits in exponent"),
        (b".5", 0, "expected a JSON value"),
        (b"+1", 0, "expected a JSON value"),
        (b"1e400", 0, "number out of range"),
        (b"-1e400", 0, "number out of range"),
    ];
    for &(input, offset, msg) in cases {
        let e = Value::parse_json(input).expect_err(&String::from_utf8_lossy(input));
        assert_eq!(
            (e.offset, e.msg),
            (offset, msg),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let e = JsonError {
        offset: 3,
        msg: "invalid escape",
    };
    assert_eq!(e.to_string(), "at byte 3: invalid escape");
    let _: &dyn std::error::Error = &e;
}

#[test]
fn nesting_is_limited() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(
        parse(&too_deep),
        Err(JsonError {
            offset: MAX_DEPTH,
            msg: "nesting too deep"
        })
    );
    let deep_objects = "{\"a\":".repeat(1000) + &"}".repeat(1000);
    assert_eq!(
        parse(&deep_objects).map_err(|e| e.msg),
        Err("nesting too deep")
    );
    let deep_arrays = "[".repeat(1000);
    assert_eq!(
        parse(&deep_arrays).map_err(|e| e.msg),
        Err("nesting too deep")
    );
}

#[test]
fn numbers() {
    let n = |s: &str| parse(s).expect(s);
    assert_eq!(n("0"), Value::Int(0));
    assert_eq!(n("-0"), Value::Int(0));
    assert_eq!(n("42"), Value::Int(42));
    assert_eq!(n("9223372036854775807"), Value::Int(i64::MAX));
    assert_eq!(n("-9223372036854775808"), Value::Int(i64::MIN));
    // Integers beyond i64 stay exact, as their text.
    let big = |s: &str| Value::BigInt(s.into());
    for text in [
        "9223372036854775808",
        "18446744073709551615",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "-340282366920938463463374607431768211457",
    ] {
        let v = n(text);
        assert_eq!(v, big(text));
        assert_eq!(json(&v), text);
        assert_eq!(v.type_name(), "int");
        assert_eq!(v.as_i64(), None);
        assert_eq!(v.as_f64(), text.parse::<f64>().ok());
    }
    assert_ne!(big("18446744073709551615"), big("18446744073709551614"));
    let text = r#"{"id":18446744073709551615,"l":[-99999999999999999999,1]}"#;
    assert_eq!(json(&parse(text).expect("valid")), text);
    assert_eq!(n("1.5"), Value::Float(1.5));
    assert_eq!(n("-0.0"), Value::Float(-0.0));
    assert_eq!(n("1e3"), Value::Float(1000.0));
    assert_eq!(n("1E+3"), Value::Float(1000.0));
    assert_eq!(n("25e-1"), Value::Float(2.5));
    assert_eq!(n("-1.25E-2"), Value::Float(-0.0125));
    assert_eq!(n("1e-400"), Value::Float(0.0));
    assert_eq!(n(" 7 "), Value::Int(7));
}

#[test]
fn duplicate_keys_last_wins_in_place() {
    let v = parse(r#"{"a":1,"b":2,"a":3}"#).expect("valid");
    assert_eq!(json(&v), r#"{"a":3,"b":2}"#);
    // Large objects take the indexed path; same semantics.
    let mut text = String::from("{");
    for i in 0..40 {
        text.push_str(&format!("\"k{i}\":{i},"));
    }
    text.push_str("\"k3\":\"again\",\"k39\":null}");
    let Ok(Value::Map(m)) = parse(&text) else {
        panic!("expected a map");
    };
    assert_eq!(m.len(), 40);
    assert_eq!(m.get(Key::new("k3")), Some(&Value::from("again")));
    assert_eq!(m.get(Key::new("k39")), Some(&Value::Null));
    assert_eq!(m.iter().nth(3).map(|(k, _)| k.as_str()), Some("k3"));
}

#[test]
fn record_parse_json() {
    let r = Record::parse_json(br#" {"a":{"b":[1]}} "#).expect("object");
    assert_eq!(
        r.get_path(&path("a.b")),
        Some(&Value::List(vec![Value::Int(1)]))
    );
    assert_eq!(
        Record::parse_json(b"  [1]"),
        Err(JsonError {
            offset: 2,
            msg: "expected a JSON object"
        })
    );
}

#[test]
fn never_panics_on_truncations_and_mutations() {
    let text = br#"{"a":[1,-2.5e3,"x\u00e9\ud83d\ude00\n",true,false,null,{"b":{}}],"c":"\"q\"","long key with escapes \t":"a longer string value, past sixteen bytes"}"#;
    // Whatever parses must render to JSON that parses back to the same value.
    let check = |input: &[u8]| {
        if let Ok(v) = Value::parse_json(input) {
            let mut out = Vec::new();
            v.write_json(&mut out);
            assert_eq!(
                Value::parse_json(&out),
                Ok(v),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    };
    for end in 0..text.len() {
        check(&text[..end]);
        for b in [
            b'"', b'\\', b'{', b']', 0xff, b'0', b'e', b'u', b'-', 0, b'\n', 0xc3,
        ] {
            let mut m = text.to_vec();
            m[end] = b;
            check(&m);
        }
    }
    // And a deterministic pseudo-random walk of multi-byte mutations.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let mut m = text.to_vec();
        for _ in 0..3 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let at = (seed >> 33) as usize % m.len();
            match seed % 3 {
                0 => m[at] = (seed >> 8) as u8,
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, b"{}[]\\\",:0"[(seed >> 16) as usize % 9]),
            }
        }
        check(&m);
    }
    assert!(Value::parse_json(text).is_ok());
}

// --- timestamps -------------------------------------------------------------------------

#[test]
fn timestamps() {
    assert_eq!(ts(Timestamp::new(0, 0, 0)), "1970-01-01T00:00:00Z");
    assert_eq!(
        ts(Timestamp::new(1_709_164_800, 0, 0)),
        "2024-02-29T00:00:00Z"
    );
    assert_eq!(
        ts(Timestamp::new(1_709_164_800 + 86_399, 0, 0)),
        "2024-02-29T23:59:59Z"
    );
    assert_eq!(
        ts(Timestamp::new(1_709_164_800 + 86_400, 0, 0)),
        "2024-03-01T00:00:00Z"
    );
    assert_eq!(
        ts(Timestamp::new(1_709_164_800, 0, -300)),
        "2024-02-28T19:00:00-05:00"
    );
    assert_eq!(
        ts(Timestamp::new(1_709_164_800, 0, -570)),
        "2024-02-28T14:30:00-09:30"
    );
    assert_eq!(
        ts(Timestamp::new(1_795_776_277, 123_000_000, 60)),
        "2026-11-27T11:44:37.123+01:00"
    );
    assert_eq!(
        ts(Timestamp::new(0, 120_000, 0)),
        "1970-01-01T00:00:00.000120Z"
    );
    assert_eq!(
        ts(Timestamp::new(0, 1, 0)),
        "1970-01-01T00:00:00.000000001Z"
    );
    assert_eq!(
        ts(Timestamp::new(0, 500_000_000, 0)),
        "1970-01-01T00:00:00.500Z"
    );
    assert_eq!(
        ts(Timestamp::new(0, 123_456_789, 0)),
        "1970-01-01T00:00:00.123456789Z"
    );
    assert_eq!(
        ts(Timestamp::new(0, 120_456_000, 330)),
        "1970-01-01T05:30:00.120456+05:30"
    );
    // Out-of-range nanos are clamped, out-of-range offsets written in full.
    assert_eq!(
        ts(Timestamp::new(0, 2_000_000_000, 0)),
        "1970-01-01T00:00:00.999999999Z"
    );
    assert_eq!(
        ts(Timestamp::new(0, 0, -6001)),
        "1969-12-27T19:59:00-100:01"
    );
    assert_eq!(ts(Timestamp::new(-1, 0, 0)), "1969-12-31T23:59:59Z");
    assert_eq!(
        ts(Timestamp::new(951_782_400, 0, 0)),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        ts(Timestamp::new(4_107_542_400, 0, 0)),
        "2100-03-01T00:00:00Z"
    );
    assert_eq!(
        ts(Timestamp::new(-62_135_596_800, 0, 0)),
        "0001-01-01T00:00:00Z"
    );
    assert_eq!(
        ts(Timestamp::new(253_402_300_799, 0, 0)),
        "9999-12-31T23:59:59Z"
    );
    // Out of RFC 3339's range: still written, never a panic.
    assert_eq!(
        ts(Timestamp::new(253_402_300_800, 0, 0)),
        "10000-01-01T00:00:00Z"
    );
    for secs in [i64::MIN, i64::MAX] {
        let _ = ts(Timestamp::new(secs, u32::MAX, i16::MIN));
        let _ = ts(Timestamp::new(secs, u32::MAX, i16::MAX));
    }
    let now = Timestamp::now();
    assert!(now.secs > 1_700_000_000 && now.nanos < 1_000_000_000 && now.offset_min == 0);
    assert_eq!(Timestamp::new(0, 0, 0).to_string(), "1970-01-01T00:00:00Z");
}

#[test]
fn civil_from_days_agrees_with_day_counting() {
    // Walk day by day from 1600-03-01 to 2400 and check against a naive calendar.
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = |y: i64, m: u32| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (1600i64, 3u32, 1u32);
    for days in -135_080..157_000 {
        assert_eq!(
            crate::record::timefmt::civil_from_days(days),
            (y, m, d),
            "day {days}"
        );
        d += 1;
        if d > month_len(y, m) {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
}

// --- value helpers ----------------------------------------------------------------------

#[test]
fn value_helpers() {
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    assert_eq!(Value::from("10.1.2.3").as_ip(), Some(ip));
    assert_eq!(Value::Bytes(b"10.1.2.3".to_vec()).as_ip(), Some(ip));
    assert_eq!(Value::Ip(ip).as_ip(), Some(ip));
    assert_eq!(Value::from("nope").as_ip(), None);
    assert_eq!(Value::Int(1).as_ip(), None);
    assert_eq!(Value::Bytes(b"txt".to_vec()).as_str(), Some("txt"));
    assert_eq!(Value::from("txt").as_bytes(), Some(&b"txt"[..]));
    assert_eq!(Value::Int(1).as_str(), None);
    assert_eq!(Value::Int(5).as_i64(), Some(5));
    assert_eq!(Value::Float(5.0).as_i64(), None);
    assert_eq!(Value::Int(5).as_f64(), Some(5.0));
    assert_eq!(Value::Float(0.5).as_f64(), Some(0.5));
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::Null.as_bool(), None);
    assert!(Value::Null.is_null());
    assert!(!Value::Int(0).is_null());
    assert!(Value::default().is_null());
    let names: Vec<_> = [
        Value::Null,
        true.into(),
        1i32.into(),
        1.0f64.into(),
        "s".into(),
        b"b".as_slice().into(),
        Timestamp::new(0, 0, 0).into(),
        Ipv4Addr::LOCALHOST.into(),
        "::/0".parse::<IpNet>().expect("net").into(),
        Vec::<Value>::new().into(),
        Map::new().into(),
    ]
    .iter()
    .map(Value::type_name)
    .collect();
    assert_eq!(
        names,
        [
            "null", "bool", "int", "float", "string", "bytes", "time", "ip", "net", "list", "map"
        ]
    );
    assert_eq!(Value::from(None::<i64>), Value::Null);
    assert_eq!(Value::from(Some(3u16)), Value::Int(3));
    assert_eq!(
        Value::from(Cow::Borrowed("c")),
        Value::from(String::from("c"))
    );
}

#[test]
fn map_operations() {
    let (a, b, c) = (Key::new("a"), Key::new("b"), Key::new("c"));
    let mut m = Map::with_capacity(8);
    assert!(m.is_empty());
    assert_eq!(m.insert(a, 1.into()), None);
    assert_eq!(m.insert(b, 2.into()), None);
    assert_eq!(m.insert(c, 3.into()), None);
    assert_eq!(m.insert(a, 10.into()), Some(Value::Int(1)));
    assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [a, b, c]);
    assert_eq!(m.get(a), Some(&Value::Int(10)));
    if let Some(v) = m.get_mut(b) {
        *v = Value::Int(20);
    }
    assert!(m.contains_key(b));
    assert_eq!(m.remove(b), Some(Value::Int(20)));
    assert_eq!(m.remove(b), None);
    assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [a, c]);
    for (_, v) in m.iter_mut() {
        *v = Value::Null;
    }
    assert_eq!(m.len(), 2);
    // Equality ignores order.
    let reordered: Map = [(c, Value::Null), (a, Value::Null)].into_iter().collect();
    assert_eq!(m, reordered);
    assert_ne!(m, Map::new());
    m.clear();
    assert!(m.is_empty() && m.entries.capacity() >= 8);
}

// --- paths and records ------------------------------------------------------------------

#[test]
fn paths_parse_and_display() {
    let p = path("src.ip");
    assert_eq!(p.keys(), [Key::new("src"), Key::new("ip")]);
    assert_eq!(p.to_string(), "src.ip");
    assert_eq!(
        "a.b.c".parse::<Path>().map(|p| p.to_string()),
        Ok("a.b.c".into())
    );
    assert_eq!(Path::from(Key::new("x")).to_string(), "x");
    for (bad, column) in [("", 1), (".a", 1), ("a.", 3), ("a..b", 3), ("ünï..b", 5)] {
        let e = Path::parse(bad).expect_err(bad);
        assert_eq!(e.column, column, "{bad}");
        assert_eq!(e.path, bad);
    }
    assert_eq!(
        Path::parse("a..b").map_err(|e| e.to_string()),
        Err("field path \"a..b\": empty name at column 3".into())
    );
}

#[test]
fn record_paths() {
    let mut r = Record::new();
    let deep = path("http.request.method");
    r.set_path(&deep, "GET".into());
    assert_eq!(r.get_path(&deep), Some(&Value::from("GET")));
    assert_eq!(r.get(Key::new("http")).map(|v| v.type_name()), Some("map"));
    // A non-map intermediate is replaced by a map.
    r.insert(Key::new("src"), Value::from("oops"));
    r.set_path(&path("src.ip"), Value::from("10.0.0.1"));
    assert_eq!(
        r.get_path(&path("src.ip")).and_then(Value::as_ip),
        "10.0.0.1".parse().ok()
    );
    // Traversing through a non-map finds nothing.
    r.set_path(&path("n"), 5.into());
    assert_eq!(r.get_path(&path("n.x")), None);
    assert_eq!(r.get_path(&path("missing.x")), None);
    assert_eq!(r.get_path_mut(&path("n.x")), None);
    assert_eq!(r.remove_path(&path("n.x")), None);
    if let Some(v) = r.get_path_mut(&path("http.request.method")) {
        *v = "POST".into();
    }
    r.set_path(&path("http.request.bytes"), 12.into());
    let mut out = Vec::new();
    r.write_json(&mut out);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        r#"{"http":{"request":{"method":"POST","bytes":12}},"src":{"ip":"10.0.0.1"},"n":5}"#
    );
    assert_eq!(r.remove_path(&deep), Some(Value::from("POST")));
    assert_eq!(r.remove_path(&deep), None);
    assert_eq!(r.remove(Key::new("n")), Some(Value::Int(5)));
    assert_eq!(
        r.get_path(&path("http.request.bytes")),
        Some(&Value::Int(12))
    );
    if let Some(v) = r.get_mut(Key::new("src")) {
        *v = Value::Null;
    }
    r.id = 7;
    r.clear();
    assert_eq!(r, Record::new());
    assert!(r.fields.entries.capacity() >= 3);
}

#[test]
fn field_getters_and_setters() {
    let f = field("user.name").expect("path");
    let mut r = Record::new();
    assert_eq!(f.get.get(&r), None);
    f.set.set(&mut r, "alice".into());
    assert_eq!(f.get.get(&r), Some(&Value::from("alice")));
    let m = field_mut("user.name").expect("path");
    if let Some(Value::Str(s)) = m.get_mut(&mut r) {
        s.push_str("@example");
    }
    assert_eq!(f.get.get(&r).and_then(Value::as_str), Some("alice@example"));
    assert!(field("user..name").is_err());
    assert!(field_mut("").is_err());
    let id = id_field();
    id.set.set(&mut r, 41);
    assert_eq!(id.get.get(&r), Some(&41));
    assert_eq!(r.id, 41);
}
