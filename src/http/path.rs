//! Go's `path.Clean` as `http.ServeMux` applies it: non-canonical paths are redirected.

/// `Some(cleaned)` if `path` is not canonical (`//`, `/./`, `/../`, a trailing `/.`), keeping a
/// trailing `/` of the original; `None` if it is already clean.
pub fn clean_path(path: &str) -> Option<String> {
    if is_clean(path) {
        return None; // the common case, checked without allocating
    }
    let mut cleaned = clean(path);
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    (cleaned != path).then_some(cleaned)
}

/// Appends `path` percent-encoded as Go's `url.URL.EscapedPath` does (`shouldEscape` in path
/// mode): letters, digits, `-_.~` and `$&+,/:;=@` stay, every other byte becomes `%XX`. Used
/// for `Location` headers, so that no byte of a request path reaches a response header
/// unescaped (a decoded `%0d%0a` would otherwise split the response).
pub fn escape_path(path: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
}

/// True if [`clean`] would leave `path` as it is: it starts with `/` and has no empty, `.`
/// or `..` segment (a trailing `/` is kept by `clean_path`).
fn is_clean(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_go() {
        let esc = |p: &str| {
            let mut out = String::new();
            escape_path(p, &mut out);
            out
        };
        assert_eq!(
            esc("/v1/key/create/my-key_1.x~"),
            "/v1/key/create/my-key_1.x~"
        );
        assert_eq!(esc("/a b?c#d%e"), "/a%20b%3Fc%23d%25e");
        assert_eq!(esc("/x\r\nSet-Cookie: a=b"), "/x%0D%0ASet-Cookie:%20a=b");
        assert_eq!(esc("/$&+,:;=@"), "/$&+,:;=@");
        assert_eq!(esc("/\u{0}\u{7f}é\u{2028}"), "/%00%7F%C3%A9%E2%80%A8");
    }

    #[test]
    fn the_clean_check_agrees_with_cleaning() {
        for p in [
            "/",
            "/v1/status",
            "/v1/key/create/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/.",
            "/a/..",
            "/.",
            "/..",
            "a",
            "",
            "/a/b/",
            "/a/b//",
            "/.a/b..",
            "/a/.../b",
        ] {
            let mut cleaned = clean(p);
            if p.ends_with('/') && cleaned != "/" {
                cleaned.push('/');
            }
            assert_eq!(is_clean(p), cleaned == p, "{p:?}");
        }
    }

    #[test]
    fn table() {
        let cases = [
            ("/v1//key", Some("/v1/key")),
            ("/v1/./key/", Some("/v1/key/")),
            ("/a/../b", Some("/b")),
            ("/v1/key/list/", None),
            ("/version", None),
            ("/", None),
            ("/..", Some("/")),
            ("//", Some("/")),
            ("/a/.", Some("/a")),
            ("/v1/key/list//", Some("/v1/key/list/")),
            ("", Some("/")),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input).as_deref(), want, "{input:?}");
        }
    }
}
