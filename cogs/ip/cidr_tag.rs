//! `cidr_tag`: names the networks an IP address belongs to.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Record, Value};
use crate::schema::settings::de::{Deserializer, MapAccess, Visitor};
use crate::schema::{
    CogParams, ConfigError, NodeValue, ParamType, SettingError, SettingValue, Settings,
};

/// Writes into `target` the names of the networks the address in `field` belongs to, as
/// a list of strings in the order the names are written (each name once). When no network
/// matches, `target` is left as it is (absent, usually), so "has a tag" is a plain
/// existence test downstream; when one does, `target` is replaced.
///
/// Each name takes one network or a list; a network is `10.0.0.0/8`, `fd00::/8`, or a
/// single address. A network with host bits set (`10.1.0.0/8`) is a configuration error,
/// as it is most likely a typing mistake. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`)
/// match IPv4 networks. Networks are scanned in order, which suits tens of networks.
///
/// An absent or null field is passed on unchanged; any other value that is not an address
/// (text or ip) follows `on_error`.
///
/// ```toml
/// [[train.cog]]
/// type = "cidr_tag"
/// field = "client"
/// target = "tags"
/// networks = { internal = ["10.0.0.0/8", "fd00::/8"], dmz = "192.0.2.0/24" }
/// ```
///
/// From Rust, over any datum, with a getter of the address, a setter of the tags and an
/// [`OnError`] ([`on_error::for_datum`] reads `on_error` for any datum):
/// `CidrTag::from_settings(&CidrTagSettings { networks: Networks(vec![("internal".into(), vec!["10.0.0.0/8".into()])]), ..Default::default() }, get, set, on_error)`.
pub struct CidrTag<D> {
    get: Getter<D, Value>,
    target: Setter<D, Value>,
    /// Networks with the index of their name, grouped by name in configuration order.
    nets: Vec<(IpNet, usize)>,
    names: Vec<Arc<str>>,
    on_error: OnError<D>,
    field_name: String,
}

/// The descriptor of `cidr_tag`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "cidr_tag",
    kind: CogKind::Transform,
    summary: "writes the names of the networks (CIDR) an IP address belongs to",
    params: CidrTagSettings::PARAMS,
    fields: &[(
        "tags",
        "(`target`) names of the matching networks; untouched when none match",
    )],
    build,
};

crate::settings! {
    /// Settings of `cidr_tag`.
    pub struct CidrTagSettings {
        /// dotted path of the address (text or ip)
        field: String = "client",
        /// name = "CIDR" or ["CIDR", ...], e.g. { internal = ["10.0.0.0/8", "fd00::/8"] }
        #[setting(required)]
        networks: Networks,
        /// dotted path receiving the list of matching names
        target: String = "tags",
        /// What to do with a value that is not an address.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

/// The `networks` of `cidr_tag`: each name with its networks, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Networks(pub Vec<(String, Vec<String>)>);

impl SettingValue for Networks {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Networks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of names and networks")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Networks, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let nets = map
                        .next_value_seed(crate::schema::settings::Seed::<Vec<String>>::default())?;
                    out.push((name, nets));
                }
                Ok(Networks(out))
            }
        }
        d.deserialize_any(V)
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

/// Networks with the index of their name.
type NetsByName = Vec<(IpNet, usize)>;

impl Networks {
    /// The networks with the index of their name, and the names.
    fn parse(&self) -> Result<(NetsByName, Vec<Arc<str>>), SettingError> {
        let mut nets = Vec::new();
        let mut names = Vec::new();
        for (name, texts) in &self.0 {
            let at = |m: String| SettingError::new("networks", format!("{name}: {m}"));
            if texts.is_empty() {
                return Err(at("give at least one network".into()));
            }
            for t in texts {
                nets.push((parse_net(t).map_err(at)?, names.len()));
            }
            names.push(Arc::from(name.as_str()));
        }
        if names.is_empty() {
            return Err(SettingError::new("networks", "give at least one network"));
        }
        Ok((nets, names))
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    check_networks(p)?;
    let s: CidrTagSettings = p.settings()?;
    let field = record::field(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = record::field(&s.target).map_err(|e| p.error("target", e.to_string()))?;
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    let tag = CidrTag::from_settings(&s, field.get, target.set, on_error)
        .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(tag))
}

/// Checks `networks` on the configuration, whose errors name the entry (`networks.NAME`)
/// and its place in the file.
fn check_networks(p: &CogParams<'_>) -> Result<(), ConfigError> {
    let Some(NodeValue::Table(entries)) = p.node("networks").map(|n| &n.value) else {
        return Err(p.cog_error("missing key \"networks\""));
    };
    let at = |name: &str, msg: String| {
        let mut e = p.error("networks", msg);
        e.key = Some(format!("networks.{name}"));
        e
    };
    for (name, node) in entries {
        let name = name.get_ref();
        let texts: Vec<&NodeValue> = match &node.value {
            NodeValue::Array(items) => items.iter().map(|n| &n.value).collect(),
            v => vec![v],
        };
        if texts.is_empty() {
            return Err(at(name, "give at least one network".into()));
        }
        for t in texts {
            let NodeValue::Str(s) = t else {
                return Err(at(
                    name,
                    format!(
                        "expected a network such as \"10.0.0.0/8\", found {}",
                        t.type_name()
                    ),
                ));
            };
            parse_net(s).map_err(|m| at(name, m))?;
        }
    }
    if entries.is_empty() {
        return Err(p.error("networks", "give at least one network"));
    }
    Ok(())
}

/// Parses a network or a single address; host bits set are refused.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a network such as \"10.0.0.0/8\" or \"fd00::/8\""))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

impl<D: 'static> CidrTag<D> {
    /// A `cidr_tag` made from its settings: `get` reads the address, `target` stores the
    /// tags, failures go to `on_error` (which `s.on_error` describes: see
    /// [`on_error::for_datum`]).
    pub fn from_settings(
        s: &CidrTagSettings,
        get: Getter<D, Value>,
        target: Setter<D, Value>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        let (nets, names) = s.networks.parse()?;
        Ok(CidrTag::new(get, target, nets, names, on_error, &s.field))
    }

    /// Tags with `names[i]` the addresses inside a network `(net, i)` of `nets`.
    pub fn new(
        get: Getter<D, Value>,
        target: Setter<D, Value>,
        nets: Vec<(IpNet, usize)>,
        names: Vec<Arc<str>>,
        on_error: OnError<D>,
        field_name: &str,
    ) -> Self {
        CidrTag {
            get,
            target,
            nets,
            names,
            on_error,
            field_name: field_name.to_string(),
        }
    }

    /// Indices of the names whose networks hold `ip`, in name order, each once.
    pub fn matches(&self, ip: IpAddr) -> impl Iterator<Item = usize> + '_ {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut last = usize::MAX;
        self.nets.iter().filter_map(move |(net, i)| {
            if *i != last && net.contains(&ip) {
                last = *i;
                Some(*i)
            } else {
                None
            }
        })
    }
}

impl<D: 'static> Cog<D> for CidrTag<D> {
    fn name(&self) -> &str {
        "cidr_tag"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let ip = match self.get.get(&d) {
            None | Some(Value::Null) => {
                out.push(d);
                return;
            }
            Some(v) => v.as_ip().ok_or(v.type_name()),
        };
        match ip {
            Ok(ip) => {
                let tags: Vec<Value> = self
                    .matches(ip)
                    .map(|i| Value::Shared(self.names[i].clone().into()))
                    .collect();
                if !tags.is_empty() {
                    self.target.set(&mut d, Value::List(tags));
                }
                out.push(d);
            }
            Err(ty) => {
                let why = format_args!(
                    "field {:?}: not an IP address (a {ty} value)",
                    self.field_name
                );
                self.on_error.fail(d, "cidr_tag", &why, out, cx);
            }
        }
    }
}

impl<D> fmt::Debug for CidrTag<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CidrTag")
            .field("field", &self.field_name)
            .field("nets", &self.nets)
            .field("names", &self.names)
            .finish()
    }
}
