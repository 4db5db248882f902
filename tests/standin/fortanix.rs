//! A stand-in of Fortanix DSM's (SDKMS) documented REST API (no emulator exists to run
//! here), strict: a session from the API key at `/sys/v1/session/auth` (`Basic`), every other
//! call with a live `Authorization: Bearer <token>`, exact methods, paths, query parameters,
//! content types and JSON body members; lists are paged by `start`/`limit`.
//!
//! Rotation as the DSM REST API reference documents `ReplaceSobject`
//! (`POST /crypto/v1/keys/replace`, `{"replaced","replaced_new_name","replacement"}`, each
//! object a descriptor `{"kid"}` or `{"name"}`, → 204): the replaced object takes the new
//! name, the two are linked (`links.replaced` on the replacement, `links.replacement` on the
//! replaced), and the replacement takes the replaced object's old name. `POST
//! /crypto/v1/keys/info` looks an object up by descriptor (no value). Links stay when the
//! object they name is deleted (a dangling kid), as nothing in the reference says otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{bearer_is_live, issue_token, q, query_pairs, random_hex, Request, Response, StandIn};

pub const API_KEY: &str = "ZmFrZS1hcHAtaWQ6ZmFrZS1hcGkta2V5LXNlY3JldC0xMjM0NQ==";
/// The stand-in serves at most this many objects per page, whatever `limit` asks.
pub const PAGE_MAX: usize = 40;

#[derive(Clone)]
pub struct Obj {
    pub kid: String,
    pub obj_type: String,
    pub group_id: String,
    pub key_ops: Vec<String>,
    pub value: String,
    pub enabled: bool,
    /// `links.replaced`: the kid of the object this one replaced.
    pub replaced: Option<String>,
    /// `links.replacement`: the kid of the object that replaced this one.
    pub replacement: Option<String>,
}

impl Obj {
    /// `"links":{…},` when the object has links, else "".
    fn links_json(&self) -> String {
        let mut links = Vec::new();
        if let Some(k) = &self.replaced {
            links.push(format!(r#""replaced":"{k}""#));
        }
        if let Some(k) = &self.replacement {
            links.push(format!(r#""replacement":"{k}""#));
        }
        if links.is_empty() {
            String::new()
        } else {
            format!(r#""links":{{{}}},"#, links.join(","))
        }
    }
}

/// The reference's pattern for names: `^[^\n]*[^\s\n][^\n]*$`, at most 4096 bytes.
fn valid_sobject_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 4096
        && !name.contains('\n')
        && name.chars().any(|c| !c.is_whitespace())
}

/// The object a descriptor (`{"kid"}` or `{"name"}`, exactly one member) names:
/// `Err(())` for a malformed descriptor, `Ok(None)` when no object matches.
fn by_descriptor(st: &State, d: Option<&simd_json::OwnedValue>) -> Result<Option<String>, ()> {
    use simd_json::prelude::*;
    let d = d.and_then(|d| d.as_object()).ok_or(())?;
    if d.len() != 1 {
        return Err(());
    }
    if let Some(name) = d.get("name").and_then(|n| n.as_str()) {
        return Ok(st.objects.contains_key(name).then(|| name.to_string()));
    }
    let kid = d.get("kid").and_then(|k| k.as_str()).ok_or(())?;
    Ok(st
        .objects
        .iter()
        .find(|(_, o)| o.kid == kid)
        .map(|(n, _)| n.clone()))
}

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Obj>,
    pub tokens: HashMap<String, Instant>,
    pub ttl: Duration,
    pub logins: usize,
    /// Authorized calls served (logins not counted).
    pub requests: usize,
    pub rejected: Vec<String>,
}

fn reject(st: &mut State, req: &Request, status: u16, why: &str) -> Response {
    st.rejected
        .push(format!("{} {}?{}: {why}", req.method, req.path, req.query));
    Response::json(status, format!(r#"{{"message":{}}}"#, q(why)))
}

pub fn handle(state: &Mutex<State>, req: &Request) -> Response {
    use simd_json::prelude::*;
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    if req.path == "/" && req.method == "GET" {
        return Response::text(200, "Fortanix DSM");
    }
    if req.path == "/sys/v1/session/auth" {
        if req.method != "POST" || !req.query.is_empty() || !req.body.is_empty() {
            return reject(st, req, 405, "POST without a body expected");
        }
        let key = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .unwrap_or("");
        if key != API_KEY {
            // Echoes what it got, as a careless server might: kes must not log it.
            return reject(st, req, 401, &format!("Invalid API key {key}"));
        }
        let token = issue_token(&mut st.tokens, st.ttl, "", 24);
        st.logins += 1;
        return Response::json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"access_token":"{token}","entity_id":"app-1"}}"#,
                st.ttl.as_secs()
            ),
        );
    }
    if !bearer_is_live(req, &st.tokens, &mut st.rejected) {
        return Response::json(401, r#"{"message":"Session is not authenticated"}"#);
    }
    st.requests += 1;
    let json_body = req.header("content-type") == Some("application/json");
    match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/crypto/v1/keys") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let ops: Option<Vec<String>> = v.get("key_ops").and_then(|o| o.as_array()).map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            });
            let (Some(obj_type), Some(name), Some(value), Some(key_ops), Some(enabled)) = (
                s("obj_type"),
                s("name"),
                s("value"),
                ops,
                v.get("enabled").and_then(|e| e.as_bool()),
            ) else {
                return reject(
                    st,
                    req,
                    400,
                    "obj_type, name, value, key_ops, enabled required",
                );
            };
            let members = v.as_object().unwrap().len();
            let group_id = s("group_id").unwrap_or_default();
            if members != 5 + usize::from(v.get("group_id").is_some())
                || base64::engine::general_purpose::STANDARD
                    .decode(&value)
                    .is_err()
            {
                return reject(st, req, 400, "unexpected members or value not base64");
            }
            if !valid_sobject_name(&name) {
                return reject(st, req, 400, "invalid name");
            }
            if st.objects.contains_key(&name) {
                return Response::json(409, r#"{"message":"sobject already exists"}"#);
            }
            let kid = format!("{}-{}", random_hex(4), random_hex(4));
            st.objects.insert(
                name.clone(),
                Obj {
                    kid: kid.clone(),
                    obj_type,
                    group_id,
                    key_ops,
                    value,
                    enabled,
                    replaced: None,
                    replacement: None,
                },
            );
            Response::json(201, format!(r#"{{"kid":"{kid}","name":{}}}"#, q(&name)))
        }
        ("POST", "/crypto/v1/keys/export") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            let name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
            let (Some(name), 1) = (name, v.as_object().unwrap().len()) else {
                return reject(st, req, 400, "exactly {name} expected");
            };
            match st.objects.get(&name) {
                Some(o) => Response::json(
                    200,
                    format!(
                        r#"{{"kid":"{}","name":{},"obj_type":"{}","group_id":"{}",{}"enabled":{},"value":"{}"}}"#,
                        o.kid,
                        q(&name),
                        o.obj_type,
                        o.group_id,
                        o.links_json(),
                        o.enabled,
                        o.value
                    ),
                ),
                None => Response::json(404, r#"{"message":"sobject does not exist"}"#),
            }
        }
        ("POST", "/crypto/v1/keys/info") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            match by_descriptor(st, Some(&v)) {
                Err(()) => reject(st, req, 400, "a descriptor {kid} or {name} expected"),
                Ok(None) => Response::json(404, r#"{"message":"sobject does not exist"}"#),
                Ok(Some(name)) => {
                    let o = &st.objects[&name];
                    Response::json(
                        200,
                        format!(
                            r#"{{"kid":"{}","name":{},"obj_type":"{}","group_id":"{}",{}"enabled":{}}}"#,
                            o.kid,
                            q(&name),
                            o.obj_type,
                            o.group_id,
                            o.links_json(),
                            o.enabled
                        ),
                    )
                }
            }
        }
        ("POST", "/crypto/v1/keys/replace") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            let new_name = v
                .get("replaced_new_name")
                .and_then(|n| n.as_str())
                .map(str::to_string);
            let members = v.as_object().map_or(0, |o| o.len());
            let (Some(new_name), 3) = (new_name, members) else {
                return reject(
                    st,
                    req,
                    400,
                    "exactly replaced, replaced_new_name, replacement expected",
                );
            };
            let (Ok(replaced), Ok(replacement)) = (
                by_descriptor(st, v.get("replaced")),
                by_descriptor(st, v.get("replacement")),
            ) else {
                return reject(st, req, 400, "descriptors {kid} or {name} expected");
            };
            let (Some(r), Some(s)) = (replaced, replacement) else {
                return Response::json(404, r#"{"message":"sobject does not exist"}"#);
            };
            if !valid_sobject_name(&new_name) {
                return reject(st, req, 400, "invalid replaced_new_name");
            }
            if r == s {
                return reject(st, req, 400, "an object cannot replace itself");
            }
            // "The metadata of S should be mostly same as that of R".
            let (ro, so) = (&st.objects[&r], &st.objects[&s]);
            if (&ro.obj_type, &ro.group_id, &ro.key_ops)
                != (&so.obj_type, &so.group_id, &so.key_ops)
            {
                return reject(
                    st,
                    req,
                    400,
                    "replacement differs in type, group or key_ops",
                );
            }
            if st.objects.contains_key(&new_name) {
                return Response::json(409, r#"{"message":"sobject already exists"}"#);
            }
            let mut old = st.objects.remove(&r).unwrap();
            let mut new = st.objects.remove(&s).unwrap();
            old.replacement = Some(new.kid.clone());
            new.replaced = Some(old.kid.clone());
            st.objects.insert(new_name, old);
            st.objects.insert(r, new);
            Response::empty(204)
        }
        ("GET", "/crypto/v1/keys") => {
            let p = query_pairs(&req.query);
            let ok = p.len() >= 2
                && p[0] == ("sort".into(), "name:asc".into())
                && p[1] == ("limit".into(), "100".into())
                && (p.len() == 2 || (p.len() == 3 && p[2].0 == "start"));
            if !ok || !req.body.is_empty() {
                return reject(st, req, 400, "expected sort=name:asc&limit=100[&start=]");
            }
            // `start` names the first object of the page (inclusive).
            let start = p.get(2).map(|s| s.1.clone()).unwrap_or_default();
            let page: Vec<String> = st
                .objects
                .range(start..)
                .take(PAGE_MAX)
                .map(|(n, o)| format!(r#"{{"name":{},"kid":"{}"}}"#, q(n), o.kid))
                .collect();
            Response::json(200, format!("[{}]", page.join(",")))
        }
        ("DELETE", path) if path.starts_with("/crypto/v1/keys/") => {
            if !req.body.is_empty() || !req.query.is_empty() {
                return reject(st, req, 400, "no body expected");
            }
            let kid = &path["/crypto/v1/keys/".len()..];
            let name = st
                .objects
                .iter()
                .find(|(_, o)| o.kid == kid)
                .map(|(n, _)| n.clone());
            match name {
                Some(n) => {
                    st.objects.remove(&n);
                    Response::empty(204)
                }
                None => Response::json(404, r#"{"message":"sobject does not exist"}"#),
            }
        }
        _ => reject(st, req, 405, "no such method or resource"),
    }
}

pub fn start(ttl: Duration) -> (StandIn, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State {
        ttl,
        ..State::default()
    }));
    let s = state.clone();
    (StandIn::start(Arc::new(move |r| handle(&s, r))), state)
}
