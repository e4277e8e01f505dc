//! A serde deserializer over configuration [`Node`]s: errors keep the place in the file
//! (the innermost value's span) and the cog's key they happened under.

use std::fmt;
use std::ops::Range;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::node::{Node, NodeValue};

/// An error while turning configuration nodes into a typed value.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// What is wrong.
    pub msg: String,
    /// Where in the file: the innermost value the error is about.
    pub span: Option<Range<usize>>,
    /// The outermost key the value sits under.
    pub key: Option<String>,
}

impl DeError {
    fn located(mut self, span: &Range<usize>, key: Option<&str>) -> Self {
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        if let Some(k) = key {
            self.key = Some(k.to_string());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            span: None,
            key: None,
        }
    }
}

/// Deserializes one node.
pub(crate) struct NodeDe<'a>(pub &'a Node);

/// Deserializes the entries of a table as a map, skipping the keys in `skip`.
pub(crate) struct TableDe<'a> {
    pub entries: &'a [(toml::Spanned<String>, Node)],
    pub skip: &'a [&'a str],
    /// When given, only these keys are read (a group of a cog's settings).
    pub only: Option<&'a [super::Param]>,
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = &self.0.span;
        match &self.0.value {
            NodeValue::Str(s) | NodeValue::Datetime(s) => visitor.visit_str(s),
            NodeValue::Int(i) => visitor.visit_i64(*i),
            NodeValue::Float(x) => visitor.visit_f64(*x),
            NodeValue::Bool(b) => visitor.visit_bool(*b),
            NodeValue::Array(items) => visitor.visit_seq(Seq(items.iter())),
            NodeValue::Table(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                skip: &[],
                only: None,
                value: None,
            }),
        }
        .map_err(|e| e.located(span, None))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.0.value {
            NodeValue::Str(s) => {
                let d: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(d)
            }
            other => Err(de::Error::custom(format!(
                "expected a string, found a {}",
                other.type_name()
            ))),
        }
        .map_err(|e| e.located(&self.0.span, None))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::Deserializer<'de> for TableDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Map {
            entries: self.entries.iter(),
            skip: self.skip,
            only: self.only,
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple option enum
        tuple_struct map struct identifier ignored_any
    }
}

struct Seq<'a>(std::slice::Iter<'a, Node>);

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            None => Ok(None),
            Some(n) => seed
                .deserialize(NodeDe(n))
                .map(Some)
                .map_err(|e| e.located(&n.span, None)),
        }
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (toml::Spanned<String>, Node)>,
    skip: &'a [&'a str],
    only: Option<&'a [super::Param]>,
    value: Option<(&'a str, &'a Node)>,
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (k, n) in self.entries.by_ref() {
            let key = k.get_ref().as_str();
            if self.skip.contains(&key)
                || self
                    .only
                    .is_some_and(|only| !only.iter().any(|p| p.name == key))
            {
                continue;
            }
            self.value = Some((key, n));
            let d: StrDeserializer<'_, DeError> = key.into_deserializer();
            return seed
                .deserialize(d)
                .map(Some)
                .map_err(|e| e.located(&k.span(), Some(key)));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, n)) = self.value.take() else {
            return Err(de::Error::custom("a value asked for before its key"));
        };
        seed.deserialize(NodeDe(n))
            .map_err(|e| e.located(&n.span, Some(key)))
    }
}
