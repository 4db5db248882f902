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
            push_escaped(b, out);
        }
    }
}

/// The `Location` of a 301 (both HTTP/1.1 and h2 build it here): `path` escaped by
/// [`escape_path`], then `?` and the request's raw query, kept as sent (as Go does) except
/// for the bytes that may not appear in a request target on the wire (controls, space, DEL),
/// which are percent-encoded. An HTTP/1.1 request line cannot carry those; an h2 `:path` can,
/// and an h2-to-HTTP/1.1 proxy in front would otherwise write a CR LF of it into its answer.
pub fn redirect_location(path: &str, query: &str) -> String {
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    escape_path(path, &mut out);
    if !query.is_empty() {
        out.push('?');
        for c in query.chars() {
            if c <= ' ' || c == '\u{7f}' {
                push_escaped(c as u8, &mut out);
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Appends `%XX` for `b`.
fn push_escaped(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0x0f)] as char);
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
    fn redirect_locations_escape_the_query_controls_only() {
        assert_eq!(redirect_location("/v1/key/create/", ""), "/v1/key/create/");
        assert_eq!(
            redirect_location("/v1/key/list/", "x=1&y=%0d%0a&z='*~\"<>é"),
            "/v1/key/list/?x=1&y=%0d%0a&z='*~\"<>é"
        );
        assert_eq!(
            redirect_location("/v1/key/create/", "a=1\r\nset-cookie: x\0\t\u{7f}"),
            "/v1/key/create/?a=1%0D%0Aset-cookie:%20x%00%09%7F"
        );
        assert_eq!(redirect_location("/a b", "?"), "/a%20b??");
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
