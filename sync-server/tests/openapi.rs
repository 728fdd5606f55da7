//! The OpenAPI document (`sync-server/openapi.yaml`, served at `/v1/openapi.yaml`) held against the
//! handlers: every route the router serves is documented, with exactly the methods it serves, and every
//! documented path and method is served. The shapes of requests and answers are checked by schemathesis
//! against a real relay (`sync-server/scripts/check-openapi.sh`).

use std::collections::{BTreeMap, BTreeSet};

use gridwork_server::api::{route_paths, OPENAPI_YAML};
use gridwork_server::{start, RelayKey, ServerConfig, StorageConfig};

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "delete", "patch", "options", "trace",
];
/// The other keys of a path item.
const PATH_ITEM_KEYS: [&str; 4] = ["parameters", "summary", "description", "servers"];

/// The methods of every path of the document's `paths`, read from the block-style YAML this repository
/// writes (a path per line at two spaces, its methods at four). Anything else in `paths` at those
/// depths fails loudly rather than being skipped: a path this reader cannot see must not pass.
fn documented(yaml: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for (n, line) in yaml.lines().enumerate() {
        let text = line.trim_end();
        if text.trim_start().is_empty() || text.trim_start().starts_with('#') {
            continue;
        }
        let indent = text.len() - text.trim_start().len();
        if indent == 0 {
            in_paths = text == "paths:";
            continue;
        }
        if !in_paths || indent > 4 {
            continue;
        }
        let key = text.trim_start();
        let key = key
            .strip_suffix(':')
            .or_else(|| key.split_once(':').map(|(k, _)| k))
            .unwrap_or_else(|| panic!("line {}: not a key: {text}", n + 1))
            .trim_matches(|c| c == '"' || c == '\'');
        match indent {
            2 => {
                assert!(
                    key.starts_with('/') && text.ends_with(':'),
                    "line {}: a path item, block style, expected: {text}",
                    n + 1
                );
                path = Some(key.to_owned());
                out.entry(key.to_owned()).or_default();
            }
            4 => {
                let p = path.as_ref().expect("a method under a path");
                if METHODS.contains(&key) {
                    out.get_mut(p).unwrap().insert(key.to_owned());
                } else {
                    assert!(
                        PATH_ITEM_KEYS.contains(&key),
                        "line {}: unknown key `{key}` in path {p}",
                        n + 1
                    );
                }
            }
            _ => panic!("line {}: unexpected indentation in paths: {text}", n + 1),
        }
    }
    assert!(!out.is_empty(), "the document has no paths");
    out
}

/// `/v1/attachments/{sha}` and `/v1/attachments/{sha256}` are the same route.
fn template(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn the_reader_sees_paths_and_methods_and_refuses_what_it_cannot_read() {
    let yaml = "openapi: 3.0.3\npaths:\n  /a:\n    get:\n      summary: x\n    parameters:\n      - {}\n  \"/b/{id}\":\n    put: {}\n    head:\n      responses: {}\ncomponents:\n  x:\n    get: 1\n";
    let got = documented(yaml);
    let want: BTreeMap<String, BTreeSet<String>> =
        [("/a", vec!["get"]), ("/b/{id}", vec!["head", "put"])]
            .into_iter()
            .map(|(p, m)| (p.to_owned(), m.into_iter().map(str::to_owned).collect()))
            .collect();
    assert_eq!(got, want);
    for bad in [
        "paths:\n  /a: {get: {}}\n",
        "paths:\n  /a:\n    gets:\n",
        "paths:\n   /a:\n",
        "paths: {}\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| documented(bad)).is_err(),
            "{bad:?} was read"
        );
    }
    assert_eq!(template("/v1/attachments/{sha256}"), "/v1/attachments/{}");
}

/// Every route the router serves is in the document with the methods it serves, and every documented
/// path and method is served (`HEAD` is served for every `GET`, as HTTP wants: documented or not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_with_the_methods_it_serves() {
    let doc = documented(OPENAPI_YAML);
    let served_paths: BTreeSet<String> = route_paths().into_iter().map(template).collect();
    let doc_paths: BTreeSet<String> = doc.keys().map(|p| template(p)).collect();
    assert_eq!(
        served_paths, doc_paths,
        "the router's paths and the document's differ"
    );

    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::sqlite(dir.path(), RelayKey::generate());
    let server = start(ServerConfig::new("127.0.0.1:0".parse().unwrap(), storage))
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    for (path, methods) in &doc {
        // A value for every path parameter (the only one: a SHA-256).
        let concrete = template(path).replace("{}", &"0".repeat(64));
        let mut served = BTreeSet::new();
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let status = http
                .request(method, format!("{base}{concrete}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            // Not routed: 405 (a wrong method) or 404 (no such path). A routed request without a
            // token is answered 401 (or 429 once the address is out of failed authentications),
            // and the routes without authentication answer 200.
            if status != 405 && status != 404 {
                served.insert(m.to_owned());
            }
        }
        let mut want = methods.clone();
        if want.contains("get") {
            want.insert("head".to_owned());
        }
        assert_eq!(
            served, want,
            "{path}: served methods and documented ones differ"
        );
    }
    // The document the relay serves is this one.
    let served = http
        .get(format!("{base}/v1/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "application/yaml");
    assert_eq!(served.text().await.unwrap(), OPENAPI_YAML);
    server.shutdown().await;
}
