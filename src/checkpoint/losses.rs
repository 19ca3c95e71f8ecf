//! The losses list of a checkpoint: JSON numbers, and strings for the values JSON lacks.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Losses as written in a checkpoint: finite values as numbers (shortest exact form), NaN and the
/// infinities as the strings `"NaN"`, `"inf"` and `"-inf"`.
#[derive(Default)]
pub(super) struct Losses(pub(super) Vec<f64>);

impl Losses {
    /// No values (an empty list is left out of a file).
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Losses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &v in &self.0 {
            if v.is_finite() {
                seq.serialize_element(&v)?;
            } else if v.is_nan() {
                seq.serialize_element("NaN")?;
            } else if v > 0.0 {
                seq.serialize_element("inf")?;
            } else {
                seq.serialize_element("-inf")?;
            }
        }
        seq.end()
    }
}

/// One loss, from a number or one of the three strings.
struct Loss(f64);

impl<'de> Deserialize<'de> for Loss {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loss, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Loss;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or \"NaN\", \"inf\", \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loss, E> {
                Ok(Loss(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loss, E> {
                Ok(Loss(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loss, E> {
                Ok(Loss(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loss, E> {
                match v {
                    "NaN" => Ok(Loss(f64::NAN)),
                    "inf" => Ok(Loss(f64::INFINITY)),
                    "-inf" => Ok(Loss(f64::NEG_INFINITY)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Losses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Losses, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Losses;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of losses")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Losses, A::Error> {
                // No pre-allocation from a size hint: the list grows only with what is read.
                let mut out = Vec::new();
                while let Some(Loss(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Losses(out))
            }
        }
        d.deserialize_seq(V)
    }
}
