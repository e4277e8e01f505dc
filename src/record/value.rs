//! [`Value`], one datum of a record.

use super::ip::write_ip;
use super::json_render::{write_escaped, write_escaped_lossy, write_f64, write_i64, write_u64};
use super::map::Map;
use super::shared::SharedStr;
use super::time::Timestamp;
use ipnet::IpNet;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;

/// One datum of a record.
///
/// Text compares equal whether it is held as `Str` or `Shared`.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// No value; renders as JSON `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float; non-finite ones render as `null`.
    Float(f64),
    /// An integer beyond `i64` (a JSON number such as `18446744073709551615`), kept as its
    /// decimal text so that it renders back exactly. It reads as a float
    /// ([`Value::as_f64`]), never as an `i64`.
    // A box rather than a `SharedStr`: a second `SharedStr` variant would take from `Shared`
    // the niche that holds the value's tag, and telling variants apart, which rendering
    // does per field, would cost more.
    BigInt(Box<str>),
    /// Text.
    Str(String),
    /// Text shared by many records (a file's path, a peer's address): cloning it only
    /// counts a reference, so supplies add such fields to every record cheaply.
    Shared(SharedStr),
    /// Raw bytes, e.g. an input line not yet parsed; may be invalid UTF-8.
    Bytes(Vec<u8>),
    /// A point in time.
    Time(Timestamp),
    /// An IP address.
    Ip(IpAddr),
    /// An IP network, e.g. `10.0.0.0/8`.
    Net(IpNet),
    /// An ordered list.
    List(Vec<Value>),
    /// Named values.
    Map(Map),
}

impl Value {
    /// The text of a `Str`, or of `Bytes` that are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Shared(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a `Str` or `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            Value::Shared(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer of an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The number of a `Float`, or of an `Int` or `BigInt` (rounded to the nearest float).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            Value::Int(n) => Some(n as f64),
            Value::BigInt(ref s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The truth of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The address of an `Ip`, or of a `Str`/`Bytes` holding one in text.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            Value::Ip(ip) => Some(*ip),
            Value::Str(_) | Value::Shared(_) | Value::Bytes(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The name of the variant, for error messages: `null`, `bool`, `int`, `float`,
    /// `string`, `bytes`, `time`, `ip`, `net`, `list` or `map`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) | Value::Shared(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "time",
            Value::Ip(_) => "ip",
            Value::Net(_) => "net",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Appends this value as JSON.
    ///
    /// Always produces valid UTF-8 JSON: invalid UTF-8 in `Bytes` becomes U+FFFD, and
    /// non-finite floats become `null`. `Time`, `Ip` and `Net` render as strings.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(n) => write_i64(out, *n),
            Value::Float(f) => write_f64(out, *f),
            Value::BigInt(s) => out.extend_from_slice(s.as_bytes()),
            Value::Str(s) => write_escaped(out, s.as_bytes()),
            Value::Shared(s) => write_escaped(out, s.as_bytes()),
            Value::Bytes(b) => write_escaped_lossy(out, b),
            Value::Time(t) => {
                out.push(b'"');
                t.write_rfc3339(out);
                out.push(b'"');
            }
            Value::Ip(ip) => {
                out.push(b'"');
                write_ip(out, ip);
                out.push(b'"');
            }
            Value::Net(net) => {
                out.push(b'"');
                write_ip(out, &net.addr());
                out.push(b'/');
                write_u64(out, u64::from(net.prefix_len()));
                out.push(b'"');
            }
            Value::List(items) => {
                out.push(b'[');
                let mut items = items.iter();
                if let Some(first) = items.next() {
                    first.write_json(out);
                    for v in items {
                        out.push(b',');
                        v.write_json(out);
                    }
                }
                out.push(b']');
            }
            Value::Map(m) => m.write_json(out),
        }
    }
}

/// Renders as JSON.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            // The text of an integer beyond i64 is canonical (no leading zero, no `+`).
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Str(_) | Value::Shared(_), Value::Str(_) | Value::Shared(_)) => {
                self.as_str() == other.as_str()
            }
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Time(a), Value::Time(b)) => a == b,
            (Value::Ip(a), Value::Ip(b)) => a == b,
            (Value::Net(a), Value::Net(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_json(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x.into())
            }
        }
    )*};
}

// No `u64`/`usize`: they have no lossless mapping onto `Int`.
value_from! {
    bool => Bool,
    i8 => Int, i16 => Int, i32 => Int, i64 => Int, u8 => Int, u16 => Int, u32 => Int,
    f32 => Float, f64 => Float,
    String => Str, &str => Str, Box<str> => Str, std::sync::Arc<str> => Shared,
    SharedStr => Shared,
    Vec<u8> => Bytes, &[u8] => Bytes,
    Timestamp => Time,
    IpAddr => Ip, Ipv4Addr => Ip, Ipv6Addr => Ip,
    IpNet => Net,
    Vec<Value> => List,
    Map => Map,
}

impl From<Cow<'_, str>> for Value {
    fn from(s: Cow<'_, str>) -> Value {
        Value::Str(s.into_owned())
    }
}

/// `None` becomes `Null`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

// Inline text must not make every value larger.
const _: () = assert!(std::mem::size_of::<Value>() == 32);
