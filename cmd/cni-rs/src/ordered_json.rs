//! A JSON value that keeps its objects' key order, for the installer.
//!
//! The conflist aws-node renders is patched in place: every key it wrote
//! stays where it was, unknown ones included, so that a diff of the file
//! shows only our two entries. `serde_json::Value` sorts object keys unless
//! serde_json's `preserve_order` feature is on, and that feature would be
//! unified into the plugins' builds (they share the workspace's
//! serde_json); this small type keeps the order here instead.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap as _, SerializeSeq as _, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A JSON value; objects are `(key, value)` pairs in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (trailing data is an error).
    pub fn parse(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Any serializable value, its struct fields in declaration order.
    pub fn from_serialize<T: Serialize>(v: &T) -> Result<Json, serde_json::Error> {
        Json::parse(&serde_json::to_vec(v)?)
    }

    /// The value at `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` of an object: in place when present, else appended.
    pub fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(pairs) = self {
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => pairs.push((key.to_string(), value)),
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The `"type"` of a plugin entry, if it has a string one.
    pub fn plugin_type(&self) -> Option<&str> {
        self.get("type").and_then(Json::as_str)
    }

    /// Pretty-printed as jq prints (two-space indent), with a final newline.
    pub fn to_pretty(&self) -> String {
        // Serializing this type cannot fail: keys are strings and numbers
        // came from a parser.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Order-insensitive equality (two objects with the same members in
    /// another order are the same conflist to a runtime).
    pub fn same_as(&self, other: &Json) -> bool {
        let v = |j: &Json| serde_json::to_value(j).ok();
        v(self) == v(other)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Json::Object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs: Vec<(String, Json)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            // A repeated key: the last one wins, as in jq and serde_json,
            // at the first one's place.
            match pairs.iter_mut().find(|(old, _)| *old == k) {
                Some((_, old)) => *old = v,
                None => pairs.push((k, v)),
            }
        }
        Ok(Json::Object(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_prints_like_jq() {
        let text = "{\n  \"z\": 1,\n  \"a\": {\n    \"y\": [\n      true,\n      null\n    ],\n    \"b\": \"9001\"\n  },\n  \"e\": [],\n  \"o\": {},\n  \"f\": 1.5\n}\n";
        let j = Json::parse(text.as_bytes()).unwrap();
        assert_eq!(j.to_pretty(), text);
        let mut k = j.clone();
        k.set("z", Json::Bool(false));
        k.set("new", Json::Null);
        let keys: Vec<&str> = match &k {
            Json::Object(p) => p.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        };
        assert_eq!(keys, ["z", "a", "e", "o", "f", "new"]);
    }

    #[test]
    fn equality_ignores_key_order_and_trailing_data_is_an_error() {
        let a = Json::parse(br#"{"a": 1, "b": [1, {"c": 2, "d": 3}]}"#).unwrap();
        let b = Json::parse(br#"{"b": [1, {"d": 3, "c": 2}], "a": 1}"#).unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&Json::parse(br#"{"a": 2}"#).unwrap()));
        assert!(Json::parse(b"{} {}").is_err());
        assert!(Json::parse(b"").is_err());
    }
}
