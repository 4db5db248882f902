//! The known layout of a config file, shared by the parser and the lint: the lint reports
//! every key a [`Shape`] does not list, and the parsers (the top level's and the keystore
//! blocks') read the config through [`Node`], which only reads keys the shape lists. So the
//! list of a section's keys lives in one place (its `Shape`, next to its parser), and a
//! field the parser reads can never be reported as unknown.

use serde_yaml::Value;

/// What a config value looks like.
pub(crate) enum Shape {
    /// A scalar or list whose content the parser checks.
    Leaf,
    /// A mapping with exactly these keys.
    Map(&'static [(&'static str, Shape)]),
    /// A mapping whose keys are names (policies, routes), each value of this shape.
    Names(&'static Shape),
    /// A list of values of this shape.
    List(&'static Shape),
    /// Not checked.
    Any,
}

impl Shape {
    /// The shape of `key` in this mapping; `None` when the mapping does not list it.
    pub(crate) fn field(&self, key: &str) -> Option<&'static Shape> {
        match self {
            Shape::Map(fields) => fields.iter().find(|(k, _)| *k == key).map(|(_, s)| s),
            _ => None,
        }
    }

    /// The keys of a mapping shape (none for other shapes).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        let fields: &'static [(&'static str, Shape)] = match self {
            Shape::Map(fields) => fields,
            _ => &[],
        };
        fields.iter().map(|(k, _)| *k)
    }
}

/// A mapping of the config (present or not) read through its [`Shape`].
#[derive(Clone, Copy)]
pub(crate) struct Node<'v> {
    value: Option<&'v Value>,
    shape: &'static Shape,
}

impl<'v> Node<'v> {
    pub(crate) fn new(value: Option<&'v Value>, shape: &'static Shape) -> Node<'v> {
        Node { value, shape }
    }

    /// Whether the mapping is there and not null.
    pub(crate) fn is_set(&self) -> bool {
        self.value.is_some_and(|v| !v.is_null())
    }

    /// The value as written (`None` when absent).
    pub(crate) fn value(&self) -> Option<&'v Value> {
        self.value
    }

    /// `value`, one entry of this [`Shape::Names`] mapping or item of this [`Shape::List`],
    /// read through the entries' shape.
    pub(crate) fn entry(&self, value: &'v Value) -> Node<'v> {
        let shape = match self.shape {
            Shape::Names(inner) | Shape::List(inner) => inner,
            _ => {
                debug_assert!(
                    false,
                    "entries of a config value that has none in its Shape"
                );
                &Shape::Any
            }
        };
        Node {
            value: Some(value),
            shape,
        }
    }

    /// The value of `key` as written (`None` when absent; a null value is kept).
    ///
    /// `key` must be one the shape lists: reading another is a bug (the lint would report
    /// the key the parser uses as unknown), and debug builds, so every test that parses the
    /// block, panic on it.
    pub(crate) fn get(&self, key: &str) -> Option<&'v Value> {
        self.shape_of(key);
        self.value.and_then(|v| v.get(key))
    }

    /// The mapping under `key` (same rule for `key` as [`Node::get`]).
    pub(crate) fn child(&self, key: &str) -> Node<'v> {
        Node {
            value: self.value.and_then(|v| v.get(key)),
            shape: self.shape_of(key),
        }
    }

    fn shape_of(&self, key: &str) -> &'static Shape {
        match self.shape {
            Shape::Map(_) => match self.shape.field(key) {
                Some(shape) => shape,
                None => {
                    debug_assert!(
                        false,
                        "the config parser reads '{key}', which its Shape does not list \
                         (known: {:?}): register it in the block's Shape",
                        self.shape.keys().collect::<Vec<_>>()
                    );
                    &Shape::Any
                }
            },
            _ => &Shape::Any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Shape = Shape::Map(&[("a", Shape::Leaf), ("m", Shape::Map(&[("b", Shape::Leaf)]))]);

    #[test]
    fn nodes_read_listed_keys_present_or_not() {
        let v: Value = serde_yaml::from_str("a: 1\nm: {b: x}\n").unwrap();
        let n = Node::new(Some(&v), &S);
        assert!(n.is_set());
        assert_eq!(n.get("a").and_then(Value::as_u64), Some(1));
        assert_eq!(n.child("m").get("b").and_then(Value::as_str), Some("x"));
        let absent = Node::new(None, &S).child("m");
        assert!(!absent.is_set());
        assert_eq!(absent.get("b"), None);
        let null: Value = serde_yaml::from_str("m:\n").unwrap();
        let m = Node::new(Some(&null), &S).child("m");
        assert!(!m.is_set());
        assert_eq!(m.get("b"), None);
        assert_eq!(S.keys().collect::<Vec<_>>(), ["a", "m"]);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "reads 'c', which its Shape does not list")]
    fn reading_an_unlisted_key_is_a_bug_debug_builds_catch() {
        let v: Value = serde_yaml::from_str("m: {c: 1}\n").unwrap();
        Node::new(Some(&v), &S).child("m").get("c");
    }
}
