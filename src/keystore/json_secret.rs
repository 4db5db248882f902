//! Credentials read out of a service's JSON answer (Vault's login token, an OAuth2 access
//! token) without leaving a copy of them in freed memory.
//!
//! simd-json copies its input into internal buffers (and `to_owned_value` every string into a
//! `String`) that it frees without wiping. These answers are read in place instead, by the
//! crate's validating reader ([`crate::json`]), whose only copies (strings
//! that had to be unescaped) are [`SecretVec`]s.

use crate::json::{decode_first_object, decode_object, JsonStr, Value};
use crate::secret::SecretVec;

/// One member's value.
pub(crate) enum Member<'a> {
    /// A string, unescaped (a copy made for that is wiped on drop).
    Str(JsonStr<'a>),
    /// A number, boolean, object or array (valid JSON): the answer from the value's first byte
    /// on, what follows the value included.
    Other(&'a [u8]),
}

impl<'a> Member<'a> {
    /// A string's bytes (`None` for other types).
    pub(crate) fn text(&self) -> Option<&[u8]> {
        match self {
            Member::Str(s) => Some(s.bytes()),
            Member::Other(_) => None,
        }
    }

    /// A string's bytes in a zeroizing buffer of their exact size.
    pub(crate) fn secret(&self) -> Option<SecretVec> {
        self.text().map(|t| SecretVec::new(t.to_vec()))
    }

    /// A non-negative integer number (not a string; `None` for a fraction or an exponent, as
    /// simd-json's `as_u64` reads them).
    pub(crate) fn uint(&self) -> Option<u64> {
        let Member::Other(value) = self else {
            return None;
        };
        let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || matches!(value.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
    }

    /// The members named in `names` of this value, when it is an object.
    pub(crate) fn members<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Option<[Option<Member<'a>>; N]> {
        match self {
            Member::Other(value) if value.first() == Some(&b'{') => {
                read(value, names, Whole::FirstValue).ok()
            }
            _ => None,
        }
    }
}

/// `prefix` and `token` (`Bearer <token>`) in a zeroizing buffer of their exact size.
pub(crate) fn header_value(prefix: &[u8], token: &[u8]) -> SecretVec {
    let mut out = SecretVec::with_capacity(prefix.len() + token.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(token);
    out
}

/// For each name in `names`, the value of the member of that exact name in the JSON object
/// `answer` (the last one when it repeats; `None` when absent or `null`). `Err` when
/// `answer` is not one JSON object.
pub(crate) fn members<'a, const N: usize>(
    answer: &'a [u8],
    names: [&str; N],
) -> Result<[Option<Member<'a>>; N], ()> {
    read(answer, names, Whole::Answer)
}

/// What of the input is the object: all of it, or its first value (a member's value, with the
/// rest of the answer after it).
enum Whole {
    Answer,
    FirstValue,
}

fn read<'a, const N: usize>(
    input: &'a [u8],
    names: [&str; N],
    whole: Whole,
) -> Result<[Option<Member<'a>>; N], ()> {
    let mut found: [Option<Member<'a>>; N] = std::array::from_fn(|_| None);
    let member = |name: JsonStr<'a>, value| {
        let Some(slot) = names.iter().position(|n| name.bytes() == n.as_bytes()) else {
            return Ok(());
        };
        found[slot] = match value {
            Value::Null => None,
            Value::Str(s) => Some(Member::Str(s)),
            Value::Other => Some(Member::Other(value_after(input, &name))),
        };
        Ok(())
    };
    let is_object = match whole {
        Whole::Answer => decode_object(input, member)?,
        Whole::FirstValue => decode_first_object(input, member)?,
    };
    if is_object {
        Ok(found)
    } else {
        Err(()) // `null`
    }
}

/// The input from the first byte of the value of member `name` (a string read from `input`)
/// on: after the name's closing quote, blanks, the colon and blanks.
fn value_after<'a>(input: &'a [u8], name: &JsonStr<'a>) -> &'a [u8] {
    let name_end =
        (name.raw.as_ptr() as usize + name.raw.len()).saturating_sub(input.as_ptr() as usize) + 1;
    let rest = input.get(name_end..).unwrap_or_default();
    let start = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b':'))
        .unwrap_or(rest.len());
    &rest[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_nested_objects_and_numbers() {
        let answer = br#" {"request_id":"x","auth" : {"policies":["a"],"client_token":"s.A\u0042c",
            "lease_duration": 2764800 ,"renewable":true},"data":null,"n":1.5,"e":1e3,"m":-1} "#;
        let [auth, data, n, e, m, missing] =
            members(answer, ["auth", "data", "n", "e", "m", "missing"]).unwrap();
        assert!(data.is_none() && missing.is_none());
        for number in [n, e, m] {
            assert_eq!(number.unwrap().uint(), None);
        }
        let auth = auth.unwrap();
        assert_eq!(auth.text(), None);
        let [token, lease, policies] = auth
            .members(["client_token", "lease_duration", "policies"])
            .unwrap();
        assert_eq!(token.unwrap().secret().unwrap().expose(), b"s.ABc");
        assert_eq!(lease.unwrap().uint(), Some(2764800));
        assert!(policies.unwrap().members(["a"]).is_none(), "an array");
        // The last duplicate wins; names match exactly.
        let [a] = members(br#"{"a":"1","A":"2","a":"3"}"#, ["a"]).unwrap();
        assert_eq!(a.unwrap().text(), Some(&b"3"[..]));
        for bad in [
            &b"null"[..],
            b"[]",
            b"{\"a\":1} x",
            b"{\"a\":}",
            b"<html>",
            b"",
        ] {
            assert!(
                members(bad, ["a"]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
