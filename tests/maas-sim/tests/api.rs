//! maas-sim through HTTP, as a MAAS client sees it: OAuth, dispatch, encodings, the state machine, networks,
//! images, the hook and faults. The OAuth header builder here is written independently of the server's parser.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use maas_sim::{Config, Failure, Fault, Handle};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

static NONCE: AtomicU64 = AtomicU64::new(1);

/// A minimal MAAS client: form bodies, PLAINTEXT OAuth with a fresh nonce per call.
struct Client {
    http: reqwest::Client,
    api: String,
    key: Option<(String, String, String)>,
}

struct Reply {
    status: u16,
    body: String,
    raw: Vec<u8>,
    headers: reqwest::header::HeaderMap,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

fn oauth_header(key: &(String, String, String), nonce: &str, timestamp: i64) -> String {
    format!(
        "OAuth realm=\"OAuth\", oauth_nonce=\"{nonce}\", oauth_timestamp=\"{timestamp}\", oauth_version=\"1.0\", \
         oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"%26{}\"",
        key.0, key.1, key.2
    )
}

fn split(key: &str) -> (String, String, String) {
    let p: Vec<&str> = key.split(':').collect();
    (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
}

/// reqwest is built without a default TLS provider in this workspace; tests only speak plain HTTP but the
/// client still needs one installed.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn fresh_nonce() -> String {
    format!("n{}-{}", NONCE.fetch_add(1, Ordering::Relaxed), rand::random::<u64>())
}

impl Client {
    fn new(sim: &Handle, key: Option<&str>) -> Client {
        install_crypto();
        Client { http: reqwest::Client::new(), api: format!("{}/api/2.0/", sim.base_url()), key: key.map(split) }
    }

    async fn send(&self, method: &str, path: &str, query: &[(&str, &str)], form: &[(&str, &str)]) -> Reply {
        let url = format!("{}{}", self.api, path);
        let mut req = self.http.request(method.parse().unwrap(), &url).query(query);
        if matches!(method, "POST" | "PUT") {
            req = req.form(form);
        }
        if let Some(key) = &self.key {
            req = req.header("Authorization", oauth_header(key, &fresh_nonce(), now()));
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.unwrap().to_vec();
        Reply { status, body: String::from_utf8_lossy(&raw).into_owned(), raw, headers }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Reply {
        self.send("GET", path, query, &[]).await
    }

    async fn op(&self, path: &str, op: &str, form: &[(&str, &str)]) -> Reply {
        self.send("POST", path, &[("op", op)], form).await
    }

    async fn machine(&self, sid: &str) -> Value {
        let r = self.get(&format!("machines/{sid}/"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Waits until the machine's status is `status`, failing after the deadline with the last state seen.
    async fn wait_status(&self, sid: &str, status: u64) -> Value {
        let start = std::time::Instant::now();
        loop {
            let m = self.machine(sid).await;
            if m["status"] == status {
                return m;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{sid} never reached {status}: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn within<F: Future<Output = ()>>(f: F) {
    install_crypto();
    tokio::time::timeout(DEADLINE, f).await.expect("test finished within its deadline");
}

async fn sim_with(enlisted: bool) -> (Handle, Client) {
    let mut cfg = Config::for_tests();
    cfg.enlisted = enlisted;
    let sim = maas_sim::start(cfg).await.unwrap();
    let client = Client::new(&sim, Some(&sim.api_key()));
    (sim, client)
}

fn sid_of(m: &Value) -> String {
    m["system_id"].as_str().unwrap().to_owned()
}

async fn sid_by_host(c: &Client, host: &str) -> String {
    let r = c.get("machines/", &[("hostname", host)]).await;
    sid_of(&r.json()[0])
}

#[tokio::test]
async fn oauth_refusals_match_maas() {
    within(async {
        let (sim, c) = sim_with(true).await;
        let anon = Client::new(&sim, None);
        let r = anon.get("machines/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (400, "Unrecognised signature: method=GET op=None"));
        let r = anon.get("subnets/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (401, "Forbidden"));

        let key = split(&sim.api_key());
        let url = format!("{}/api/2.0/machines/", sim.base_url());
        let call = |header: String| {
            let url = url.clone();
            async move {
                let r = reqwest::Client::new().get(url).header("Authorization", header).send().await.unwrap();
                let st = r.status().as_u16();
                let www = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
                (st, www, r.text().await.unwrap())
            }
        };
        let bad_token = (key.0.clone(), "nope".to_owned(), key.2.clone());
        let (st, www, body) = call(oauth_header(&bad_token, &fresh_nonce(), now())).await;
        assert_eq!((st, body.as_str()), (401, "Authorization Error: 'Invalid access token: nope'"));
        assert_eq!(www.as_deref(), Some("OAuth realm=\"OAuth\""));
        let bad_consumer = ("x".to_owned(), key.1.clone(), key.2.clone());
        let (st, _, body) = call(oauth_header(&bad_consumer, &fresh_nonce(), now())).await;
        assert_eq!((st, body.as_str()), (401, "Authorization Error: Invalid API key."));
        let bad_sig = (key.0.clone(), key.1.clone(), "wrong".to_owned());
        let (st, _, body) = call(oauth_header(&bad_sig, &fresh_nonce(), now())).await;
        assert_eq!(st, 401);
        assert!(body.contains("Invalid signature"), "{body}");
        let (st, _, body) = call(oauth_header(&key, &fresh_nonce(), now() - 301)).await;
        assert_eq!(st, 401);
        assert!(body.contains("Expired timestamp"), "{body}");
        // A timestamp in the future is accepted.
        let (st, _, _) = call(oauth_header(&key, &fresh_nonce(), now() + 3600)).await;
        assert_eq!(st, 200);
        let nonce = fresh_nonce();
        assert_eq!(call(oauth_header(&key, &nonce, now())).await.0, 200);
        let (st, _, body) = call(oauth_header(&key, &nonce, now())).await;
        assert_eq!((st, body), (401, format!("Authorization Error: 'Nonce already used: {nonce}'")));
        // Without all six oauth_ fields the request is anonymous.
        let (st, _, body) = call("OAuth oauth_token=\"x\"".to_owned()).await;
        assert_eq!((st, body.as_str()), (400, "Unrecognised signature: method=GET op=None"));
        assert_eq!(c.get("machines/", &[]).await.status, 200);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn op_dispatch_rules() {
    within(async {
        let (sim, c) = sim_with(true).await;
        let r = c.get("machines/", &[("op", "deploy")]).await;
        assert_eq!((r.status, r.body.as_str()), (400, "Unrecognised signature: method=GET op=deploy"));
        assert!(r.content_type().starts_with("text/plain"));
        let r = c.op("machines/", "foo", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (400, "Unrecognised signature: method=POST op=foo"));
        let r = c.send("PUT", "machines/", &[], &[]).await;
        assert_eq!(r.status, 405);
        assert!(r.headers.contains_key("allow"));
        let r = c.get("foo/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (404, "Unknown API endpoint: /MAAS/api/2.0/foo/."));
        // op in the body, op as a path suffix, and an empty op meaning CRUD.
        let r = c.send("POST", "machines/", &[], &[("op", "allocate"), ("name", "server1")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["status"], 10);
        let r = c.send("POST", "machines/op-allocate", &[], &[("name", "server2")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["hostname"], "server2");
        let r = c
            .send(
                "POST",
                "machines/",
                &[("op", "")],
                &[("architecture", "amd64"), ("mac_addresses", "52:54:00:aa:bb:cc")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["architecture"], "amd64/generic");
        assert!(r.headers.contains_key("x-maas-api-hash"));
        let v = reqwest::get(format!("{}/api/version/", sim.base_url())).await.unwrap().text().await.unwrap();
        assert_eq!(v, "2.0");
        let r = Client::new(&sim, None).get("version/", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.json()["capabilities"].as_array().unwrap().contains(&Value::from("authenticate-api")));
        let r = c.get("machines/nope42/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (404, "No Machine matches the given query."));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn multipart_bodies_with_base64_parts_and_quoted_boundary() {
    within(async {
        let (sim, c) = sim_with(true).await;
        let sid = sid_by_host(&c, "server1").await;
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let boundary = "===============7330845974216740156==";
        let mut body = String::new();
        // python-libmaas encodes user data with encodebytes (newlines every 76 chars), then base64s the part again.
        let user_data = b64("#cloud-config\nruncmd: [echo hi]\n") + "\n";
        for (name, value) in [("distro_series", "focal"), ("user_data", user_data.as_str())] {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\
                 Content-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{}\r\n",
                b64(value)
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let key = split(&sim.api_key());
        let r = reqwest::Client::new()
            .post(format!("{}/api/2.0/machines/{sid}/?op=deploy", sim.base_url()))
            .header("Content-Type", format!("multipart/form-data; boundary=\"{boundary}\""))
            .header("Authorization", oauth_header(&key, &fresh_nonce(), now()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let m: Value = r.json().await.unwrap();
        assert_eq!((m["status"].as_u64(), m["distro_series"].as_str()), (Some(9), Some("focal")));
        let log = sim.request_log();
        let last = log.last().unwrap();
        assert_eq!(last.op.as_deref(), Some("deploy"));
        assert!(last.params.contains(&("user_data".to_owned(), "<redacted>".to_owned())));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn describe_document_shape() {
    within(async {
        let (sim, _) = sim_with(false).await;
        let r = Client::new(&sim, None).get("describe/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), "application/json");
        assert!(!r.body.contains('\n'), "describe is compact");
        let d = r.json();
        assert_eq!(d["doc"], "MAAS API");
        assert_eq!(d["hash"].as_str().unwrap(), r.headers["x-maas-api-hash"].to_str().unwrap());
        let resources = d["resources"].as_array().unwrap();
        let names: Vec<&str> = resources.iter().map(|r| r["name"].as_str().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for res in resources {
            assert!(res.get("anon").is_some() && res.get("auth").is_some(), "{res}");
        }
        let machines = resources.iter().find(|r| r["name"] == "MachinesHandler").unwrap();
        assert_eq!(machines["anon"]["name"], "AnonMachinesHandler");
        let uri = machines["auth"]["uri"].as_str().unwrap();
        assert_eq!(uri, format!("http://{}/MAAS/api/2.0/machines/", sim.addr()));
        let allocate =
            machines["auth"]["actions"].as_array().unwrap().iter().find(|a| a["name"] == "allocate").unwrap();
        assert_eq!(
            (allocate["method"].as_str(), allocate["op"].as_str(), &allocate["restful"]),
            (Some("POST"), Some("allocate"), &Value::Bool(false))
        );
        assert!(allocate.get("doc").is_some());
        let machine = resources.iter().find(|r| r["name"] == "MachineHandler").unwrap();
        assert!(machine["anon"].is_null());
        assert_eq!(machine["auth"]["params"], serde_json::json!(["system_id"]));
        let version = resources.iter().find(|r| r["name"] == "VersionHandler").unwrap();
        assert!(version["auth"].is_null() && version["anon"].is_object());
        assert!(!d["handlers"].as_array().unwrap().is_empty());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn lifecycle_from_creation_through_deploy_and_release() {
    within(async {
        let (sim, c) = sim_with(false).await;
        // Creation by an admin starts commissioning; power params as separate fields.
        let r = c
            .send(
                "POST",
                "machines/",
                &[],
                &[
                    ("architecture", "amd64/generic"),
                    ("mac_addresses", "52:54:00:00:00:02"),
                    ("power_type", "amt"),
                    ("power_parameters_power_address", "172.16.15.2"),
                    ("power_parameters_power_pass", "s3cret"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let m = r.json();
        assert_eq!((m["status"].as_u64(), m["hostname"].as_str()), (Some(1), Some("server2")));
        let sid = sid_of(&m);
        let m = c.wait_status(&sid, 4).await;
        assert_eq!((m["memory"].as_u64(), m["cpu_count"].as_u64()), (Some(16384), Some(4)));
        assert!((m["storage"].as_f64().unwrap() - 480_114.819072).abs() < 1e-6);
        assert_eq!(m["blockdevice_set"][1]["size"], 240_057_409_536u64);
        assert_eq!(m["interface_set"][0]["name"], "eno1");
        assert_eq!((m["commissioning_status"].as_i64(), m["testing_status"].as_i64()), (Some(2), Some(2)));
        assert_eq!(m["power_state"], "off");
        assert!(
            sim.request_log()
                .iter()
                .any(|l| l.params.contains(&("power_parameters_power_pass".into(), "<redacted>".into())))
        );
        let pp = c.get(&format!("machines/{sid}/"), &[("op", "power_parameters")]).await.json();
        assert_eq!(pp["power_address"], "172.16.15.2");

        // details: a BSON document whose length prefix matches the body.
        let r = c.get(&format!("machines/{sid}/"), &[("op", "details")]).await;
        assert_eq!(r.content_type(), "application/bson");
        let bytes = &r.raw;
        assert_eq!(i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len());
        // Tags: create, attach, filter.
        assert_eq!(c.send("POST", "tags/", &[], &[("name", "db")]).await.status, 200);
        let r = c.op("tags/db/", "update_nodes", &[("add", sid.as_str())]).await;
        assert_eq!(r.json()["added"], 1);
        let tagged = c.get("machines/", &[("tags", "db")]).await.json();
        assert_eq!(tagged[0]["tag_names"], serde_json::json!(["db"]));
        let r = c.send("POST", "tags/", &[], &[("name", "bad tag")]).await;
        assert_eq!(r.body, r#"{"name": ["Invalid character in tag name."]}"#);

        // Script results and the legacy commissioning results.
        let sets = c.get(&format!("nodes/{sid}/results/"), &[("type", "commissioning")]).await.json();
        assert_eq!(sets[0]["status_name"], "Passed");
        let cur = c.get(&format!("nodes/{sid}/results/current-testing/"), &[]).await.json();
        assert_eq!(cur["results"][0]["name"], "smartctl-validate");
        let flat = c.get("commissioning-results/", &[("system_id", sid.as_str())]).await.json();
        assert!(!flat.as_array().unwrap().is_empty());

        // Allocate: unknown params refused, then by name.
        let r = c.op("machines/", "allocate", &[("colour", "red")]).await;
        assert_eq!((r.status, r.body.as_str()), (400, r#"{"colour": ["No such constraint."]}"#));
        let r = c.op("machines/", "allocate", &[("name", "nosuch")]).await;
        assert_eq!(r.status, 409);
        assert!(r.body.starts_with("No available machine matches constraints: [('name', ['nosuch'])]"), "{}", r.body);
        let m = c.op("machines/", "allocate", &[("name", "server2")]).await.json();
        assert_eq!((m["status"].as_u64(), m["owner"].as_str()), (Some(10), Some("admin")));
        assert!(m.get("constraints_by_type").is_some());

        // Deploy, then the refusals while deploying.
        let m = c.op(&format!("machines/{sid}/"), "deploy", &[("distro_series", "ubuntu/jammy")]).await.json();
        assert_eq!(
            (m["status"].as_u64(), m["distro_series"].as_str(), m["osystem"].as_str()),
            (Some(9), Some("jammy"), Some("ubuntu"))
        );
        let r = c.op(&format!("machines/{sid}/"), "deploy", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Can't deploy a machine that is in the 'Deploying' state"));
        let r = c.op(&format!("machines/{sid}/"), "commission", &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, r#"{"__all__": ["Commission is not available because of the current state of the node."]}"#)
        );
        let m = c.wait_status(&sid, 6).await;
        assert_eq!((m["status_message"].as_str(), m["power_state"].as_str()), (Some("Deployed"), Some("on")));
        assert!(!m["ip_addresses"].as_array().unwrap().is_empty());

        // Lock refuses edits; abort refuses a deployed machine.
        let r = c.op(&format!("machines/{sid}/"), "abort", &[]).await;
        assert_eq!(
            (r.status, r.body),
            (409, format!("Cannot abort in current state: node {sid} is in state Deployed."))
        );
        assert_eq!(c.op(&format!("machines/{sid}/"), "lock", &[]).await.json()["locked"], true);
        let r = c.op(&format!("machines/{sid}/"), "lock", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Machine is already locked"));
        assert_eq!(c.op(&format!("machines/{sid}/"), "release", &[]).await.status, 403);
        assert_eq!(c.op(&format!("machines/{sid}/"), "unlock", &[]).await.status, 200);
        let r = c.op(&format!("machines/{sid}/"), "unlock", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Machine is not locked"));

        // Workload annotations.
        let m = c.op(&format!("machines/{sid}/"), "set_workload_annotations", &[("role", "db")]).await.json();
        assert_eq!(m["workload_annotations"]["role"], "db");

        // Release with erase goes through disk erasing.
        let m =
            c.op(&format!("machines/{sid}/"), "release", &[("erase", "true"), ("quick_erase", "true")]).await.json();
        assert_eq!(m["status"], 14);
        let m = c.wait_status(&sid, 4).await;
        assert_eq!((m["owner"].clone(), m["distro_series"].as_str()), (Value::Null, Some("")));
        // Release of a READY machine is a no-op; mark_fixed refuses a non-broken machine.
        assert_eq!(c.op(&format!("machines/{sid}/"), "release", &[]).await.json()["status"], 4);
        let r = c.op(&format!("machines/{sid}/"), "mark_fixed", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Can't mark a non-broken node as 'Ready'."));
        let r = c.op(&format!("machines/{sid}/"), "power_on", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Can't start node: it hasn't been allocated."));
        let r = c.op(&format!("machines/{sid}/"), "set_workload_annotations", &[("a", "b")]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "Cannot set workload annotation: it hasn't been acquired."));
        let r = c.op(&format!("machines/{sid}/"), "mark_broken", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (403, ""));

        // Deploy on READY allocates implicitly; abort goes back to ALLOCATED, asynchronously.
        let m = c.op(&format!("machines/{sid}/"), "deploy", &[]).await.json();
        assert_eq!((m["status"].as_u64(), m["owner"].as_str()), (Some(9), Some("admin")));
        let m = c.op(&format!("machines/{sid}/"), "abort", &[]).await.json();
        assert_eq!(m["status"], 9, "abort applies after the reply");
        c.wait_status(&sid, 10).await;
        // Released while powered off: READY at once.
        assert_eq!(c.op(&format!("machines/{sid}/"), "release", &[]).await.json()["status"], 4);

        // Broken and fixed.
        c.op("machines/", "allocate", &[("system_id", sid.as_str())]).await;
        let m = c.op(&format!("machines/{sid}/"), "mark_broken", &[("comment", "bad dimm")]).await.json();
        assert_eq!((m["status"].as_u64(), m["error_description"].as_str()), (Some(8), Some("bad dimm")));
        assert_eq!(c.op(&format!("machines/{sid}/"), "mark_fixed", &[]).await.json()["status"], 4);
        let r = c.op("machines/", "allocate", &[("system_id", "zzzzzz")]).await;
        assert_eq!((r.status, r.body.as_str()), (409, "No machine with system ID zzzzzz available."));

        // Update and delete.
        let r =
            c.send("PUT", &format!("machines/{sid}/"), &[], &[("description", "db host"), ("zone", "nowhere")]).await;
        assert_eq!(r.status, 400);
        let m = c.send("PUT", &format!("machines/{sid}/"), &[], &[("description", "db host")]).await.json();
        assert_eq!(m["description"], "db host");

        // Events record the transitions in MAAS's date format.
        let ev = c.get("events/", &[("op", "query"), ("id", sid.as_str()), ("limit", "500")]).await.json();
        let types: Vec<&str> = ev["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        for t in [
            "Commissioning",
            "Testing",
            "Ready",
            "Deploying",
            "Installing OS",
            "Deployed",
            "Erasing disk",
            "Marking node broken",
        ] {
            assert!(types.contains(&t), "{t} missing from {types:?}");
        }
        let created = ev["events"][0]["created"].as_str().unwrap();
        assert_eq!(created.as_bytes()[11], b'.', "{created}");
        let newest = ev["events"][0]["id"].as_u64().unwrap();
        let after = c.get("events/", &[("op", "query"), ("after", &newest.to_string())]).await.json();
        assert_eq!(after["count"], 0);
        assert_eq!(c.send("DELETE", &format!("machines/{sid}/"), &[], &[]).await.status, 204);
        assert_eq!(c.get(&format!("machines/{sid}/"), &[]).await.status, 404);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn commissioning_abort_and_injected_failures() {
    within(async {
        let (sim, c) = sim_with(false).await;
        let create = |mac: &'static str| {
            let c = &c;
            async move {
                let r = c.send("POST", "machines/", &[], &[("architecture", "amd64"), ("mac_addresses", mac)]).await;
                assert_eq!(r.status, 200, "{}", r.body);
                sid_of(&r.json())
            }
        };
        // Abort during commissioning returns the machine to NEW. At MAAS-like speed (commissioning takes 40 s)
        // the abort surely lands while commissioning; it applies 0.5 s later.
        let mut slow_cfg = Config::for_tests();
        slow_cfg.time_scale = 1.0;
        let slow = maas_sim::start(slow_cfg).await.unwrap();
        let sc = Client::new(&slow, Some(&slow.api_key()));
        let r = sc
            .send("POST", "machines/", &[], &[("architecture", "amd64"), ("mac_addresses", "52:54:00:00:00:01")])
            .await;
        let slow_sid = sid_of(&r.json());
        assert_eq!(sc.op(&format!("machines/{slow_sid}/"), "abort", &[]).await.json()["status"], 1);
        let m = sc.wait_status(&slow_sid, 0).await;
        assert_eq!(m["commissioning_status_name"], "Aborted");
        slow.shutdown().await;
        let s1 = create("52:54:00:00:00:01").await;
        c.wait_status(&s1, 4).await;
        // Commissioning again from READY with tests disabled skips TESTING.
        let m = c.op(&format!("machines/{s1}/"), "commission", &[("testing_scripts", "none")]).await.json();
        assert_eq!(m["status"], 1);
        let m = c.wait_status(&s1, 4).await;
        assert_eq!(m["testing_status"], -1);

        // Failed commissioning, then commissioning again once the fault is gone.
        sim.inject(Fault::FailCommissioning { hostname: "server3".into() });
        let s3 = create("52:54:00:00:00:03").await;
        let m = c.wait_status(&s3, 2).await;
        assert_eq!(m["status_name"], "Failed commissioning");
        sim.set_machine_failure("server3", Failure::None);
        c.op(&format!("machines/{s3}/"), "commission", &[]).await;
        c.wait_status(&s3, 4).await;

        // Failed deployment, then release back to READY.
        sim.set_machine_failure("server3", Failure::Deployment);
        c.op(&format!("machines/{s3}/"), "deploy", &[]).await;
        let m = c.wait_status(&s3, 11).await;
        assert_eq!(m["status_name"], "Failed deployment");
        let r = c.op(&format!("machines/{s3}/"), "deploy", &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (409, "Can't deploy a machine that is in the 'Failed deployment' state")
        );
        c.op(&format!("machines/{s3}/"), "release", &[]).await;
        c.wait_status(&s3, 4).await;

        // Status filters use the lower-case keys.
        let ready = c.get("machines/", &[("status", "ready")]).await.json();
        assert_eq!(ready.as_array().unwrap().len(), 2);
        let r = c.get("machines/", &[("status", "Ready")]).await;
        assert_eq!(r.status, 400);
        let r = c.get("machines/", &[("tags", "gpu")]).await;
        assert_eq!((r.status, r.body.as_str()), (400, r#"{"tags": ["No such tag(s): 'gpu'."]}"#));

        // A non-admin cannot commission nor mark_fixed, and sees MAAS's admin-only message.
        let user = Client::new(&sim, Some(&sim.create_api_key("alice", false)));
        let r = user.op(&format!("machines/{s1}/"), "commission", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "This method is reserved for admin users."));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn ip_range_validation_messages() {
    within(async {
        let (sim, c) = sim_with(false).await;
        let create = |form: Vec<(&'static str, &'static str)>| {
            let c = &c;
            async move { c.send("POST", "ipranges/", &[], &form).await }
        };
        let r = create(vec![("start_ip", "172.16.11.1"), ("end_ip", "172.16.14.255")]).await;
        assert_eq!((r.status, r.body.as_str()), (400, r#"{"type": ["This field is required."]}"#));
        let r = create(vec![("type", "dynamic"), ("start_ip", "172.16.14.255"), ("end_ip", "172.16.11.1")]).await;
        assert_eq!(r.body, r#"{"end_ip": ["End IP address must not be less than Start IP address."]}"#);
        let r = create(vec![("type", "dynamic"), ("start_ip", "10.0.0.1"), ("end_ip", "10.0.0.9"), ("subnet", "1")]).await;
        assert_eq!(
            r.body,
            r#"{"start_ip": ["IP addresses must be within subnet: 172.16.0.0/20."], "end_ip": ["IP addresses must be within subnet: 172.16.0.0/20."]}"#
        );
        let r = create(vec![("type", "dynamic"), ("start_ip", "172.16.15.1"), ("end_ip", "172.16.16.1"), ("subnet", "1")]).await;
        assert_eq!(r.body, r#"{"end_ip": ["End IP address must be within subnet: 172.16.0.0/20."]}"#);
        let r = create(vec![("type", "reserved"), ("start_ip", "172.16.0.0"), ("end_ip", "172.16.0.9")]).await;
        assert_eq!(r.body, r#"{"start_ip": ["Reserved network address cannot be included in IP range."]}"#);
        let r = create(vec![("type", "reserved"), ("start_ip", "172.16.15.200"), ("end_ip", "172.16.15.255")]).await;
        assert_eq!(r.body, r#"{"end_ip": ["Broadcast address cannot be included in IP range."]}"#);
        let r = create(vec![("type", "dynamic"), ("start_ip", "172.16.0.1"), ("end_ip", "172.16.0.20")]).await;
        assert!(r.body.contains("Requested dynamic range conflicts with an existing IP address or range."), "{}", r.body);
        let r = create(vec![("type", "dynamic"), ("start_ip", "172.16.11.1"), ("end_ip", "172.16.14.255"), ("comment", "lab")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let range = r.json();
        assert_eq!((range["type"].as_str(), range["subnet"]["cidr"].as_str()), (Some("dynamic"), Some("172.16.0.0/20")));
        assert_eq!(range["user"]["username"], "admin");
        let r = create(vec![("type", "reserved"), ("start_ip", "172.16.14.0"), ("end_ip", "172.16.15.0")]).await;
        assert!(r.body.contains("Requested reserved range conflicts with an existing range."), "{}", r.body);
        let user = Client::new(&sim, Some(&sim.create_api_key("bob", false)));
        let r = user.send("POST", "ipranges/", &[], &[("type", "dynamic"), ("start_ip", "172.16.9.1"), ("end_ip", "172.16.9.9")]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "Unable to create dynamic IP range. You don't have sufficient privileges."));
        let reserved = c.get("subnets/172.16.0.0/20/", &[("op", "reserved_ip_ranges")]).await.json();
        assert!(reserved.as_array().unwrap().iter().any(|r| r["purpose"][0] == "dynamic"));
        let stats = c.get("subnets/1/", &[("op", "statistics")]).await.json();
        assert_eq!(stats["total_addresses"], 4094);
        let id = range["id"].as_u64().unwrap();
        let r = c.send("PUT", &format!("ipranges/{id}/"), &[], &[("end_ip", "172.16.14.200")]).await;
        assert_eq!(r.json()["end_ip"], "172.16.14.200");
        let r = user.send("PUT", &format!("ipranges/{id}/"), &[], &[("comment", "mine")]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "Unable to modify IP range. You don't own the IP range."));
        assert_eq!(c.send("DELETE", &format!("ipranges/{id}/"), &[], &[]).await.status, 204);
        let r = c.get(&format!("ipranges/{id}/"), &[]).await;
        assert_eq!((r.status, r.body.as_str()), (404, "No IPRange matches the given query."));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn vlan_dhcp_refusal_order() {
    within(async {
        let (sim, c) = sim_with(false).await;
        let racks = c.get("rackcontrollers/", &[]).await.json();
        let rack = racks[0]["system_id"].as_str().unwrap().to_owned();
        assert_eq!(racks[0]["node_type"], 4);
        assert_eq!(racks[0]["interface_set"][0]["vlan"]["id"], 5001);
        let notes = c.get("notifications/", &[]).await.json();
        assert!(notes.to_string().contains("DHCP is not enabled"));
        // No dynamic range: only the dhcp_on error, even without a primary rack.
        let r = c.send("PUT", "fabrics/0/vlans/0/", &[], &[("dhcp_on", "true")]).await;
        assert_eq!(r.body, r#"{"dhcp_on": ["dhcp can only be turned on when a dynamic IP range is defined."]}"#);
        c.send(
            "POST",
            "ipranges/",
            &[],
            &[("type", "dynamic"), ("start_ip", "172.16.11.1"), ("end_ip", "172.16.14.255")],
        )
        .await;
        let r = c.send("PUT", "fabrics/0/vlans/untagged/", &[], &[("dhcp_on", "true")]).await;
        assert_eq!(r.body, r#"{"__all__": ["dhcp can only be turned on when a primary rack controller is set."]}"#);
        let r = c.send("PUT", "fabrics/0/vlans/0/", &[], &[("dhcp_on", "true"), ("primary_rack", "nope")]).await;
        // A rejected field is missing from cleaned_data, so clean() also reports the missing primary rack.
        assert_eq!(
            r.body,
            r#"{"primary_rack": ["Select a valid choice. nope is not one of the available choices."], "__all__": ["dhcp can only be turned on when a primary rack controller is set."]}"#
        );
        let r = c.send("PUT", "fabrics/0/vlans/0/", &[], &[("dhcp_on", "true"), ("primary_rack", rack.as_str())]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!((v["dhcp_on"].as_bool(), v["primary_rack"].as_str()), (Some(true), Some(rack.as_str())));
        assert_eq!(v["resource_uri"], "/MAAS/api/2.0/vlans/5001/");
        assert_eq!(v["fabric"], "fabric-0");
        assert_eq!(c.get("vlans/5001/", &[]).await.json()["dhcp_on"], true);
        // The router's DHCP server, as the rack would detect it.
        assert!(c.get("vlans/5001/", &[]).await.json()["external_dhcp"].is_null());
        let admin = format!("http://{}/_sim/external-dhcp", sim.addr());
        let r = reqwest::Client::new().post(&admin).body(r#"{"vlan_id":5001,"ip":"172.16.0.1"}"#).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert_eq!(c.get("fabrics/0/vlans/0/", &[]).await.json()["external_dhcp"], "172.16.0.1");
        assert!(sim.set_external_dhcp(5001, None));
        assert!(c.get("vlans/5001/", &[]).await.json()["external_dhcp"].is_null());
        assert!(!c.get("notifications/", &[]).await.body.contains("DHCP is not enabled"));
        let services = c.get(&format!("rackcontrollers/{rack}/"), &[]).await.json()["service_set"].clone();
        assert!(services.as_array().unwrap().iter().any(|s| s["name"] == "dhcpd" && s["status"] == "running"));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn config_get_and_set() {
    within(async {
        let (sim, c) = sim_with(false).await;
        let get = |name: &'static str| {
            let c = &c;
            async move { c.get("maas/", &[("op", "get_config"), ("name", name)]).await }
        };
        assert_eq!(get("upstream_dns").await.body, "null");
        assert_eq!(get("dnssec_validation").await.json(), "auto");
        assert_eq!(get("default_distro_series").await.json(), "jammy");
        let r = c.op("maas/", "set_config", &[("name", "upstream_dns"), ("value", "172.20.129.131,8.8.8.8")]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "OK"));
        assert_eq!(get("upstream_dns").await.json(), "172.20.129.131 8.8.8.8");
        let r = c.op("maas/", "set_config", &[("name", "upstream_dns"), ("value", "8.8.8.x")]).await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("Invalid IP address: 8.8.8.x"), "{}", r.body);
        let r = c.op("maas/", "set_config", &[("name", "dnssec_validation"), ("value", "maybe")]).await;
        assert_eq!(r.status, 400);
        assert_eq!(c.get("maas/", &[("op", "get_config")]).await.body, "No provided name!");
        assert_eq!(c.op("maas/", "set_config", &[("name", "kernel_opts")]).await.body, "No provided value!");
        let r = get("no_such_thing").await;
        assert!(r.body.starts_with(r#"{"no_such_thing": ["no_such_thing is not a valid config setting"#), "{}", r.body);
        let user = Client::new(&sim, Some(&sim.create_api_key("carol", false)));
        let r = user.op("maas/", "set_config", &[("name", "kernel_opts"), ("value", "x")]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "This method is reserved for admin users."));
        c.op("maas/", "set_config", &[("name", "upstream_dns"), ("value", "")]).await;
        assert_eq!(get("upstream_dns").await.body, "\"\"");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn boot_images_import_takes_time_then_syncs() {
    within(async {
        let (sim, c) = sim_with(false).await;
        let sources = c.get("boot-sources/", &[]).await.json();
        assert_eq!(sources[0]["url"], "http://images.maas.io/ephemeral-v3/stable/");
        let r = c
            .send(
                "POST",
                "boot-sources/1/selections/",
                &[],
                &[("os", "ubuntu"), ("release", "focal"), ("arches", "amd64")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = c.send("POST", "boot-sources/1/selections/", &[], &[("os", "ubuntu"), ("release", "focal")]).await;
        assert!(r.body.contains("already exists"), "{}", r.body);
        let r = c.send("POST", "boot-sources/1/selections/", &[], &[("os", "ubuntu"), ("release", "xyz")]).await;
        assert_eq!(r.body, r#"{"os": ["OS ubuntu with release xyz has no available images for download"]}"#);
        let r = c.send("POST", "boot-sources/", &[], &[("url", "http://mirror.example/")]).await;
        assert!(r.body.contains("keyring"));
        assert_eq!(c.get("boot-resources/", &[("op", "is_importing")]).await.body, "false");
        let r = c.op("boot-resources/", "import", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "Import of boot resources started"));
        assert_eq!(c.get("boot-resources/", &[("op", "is_importing")]).await.body, "true");
        let start = std::time::Instant::now();
        while c.get("boot-resources/", &[("op", "is_importing")]).await.body == "true" {
            assert!(start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(300), "the import took time");
        let list = c.get("boot-resources/", &[("type", "synced")]).await.json();
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"ubuntu/jammy") && names.contains(&"ubuntu/focal"), "{names:?}");
        let id = list[0]["id"].as_u64().unwrap();
        let one = c.get(&format!("boot-resources/{id}/"), &[]).await.json();
        let sets = one["sets"].as_object().unwrap();
        assert!(sets.values().all(|s| s["complete"] == true));
        let rack = c.get("rackcontrollers/", &[]).await.json()[0]["system_id"].as_str().unwrap().to_owned();
        let imgs = c.get(&format!("rackcontrollers/{rack}/"), &[("op", "list_boot_images")]).await.json();
        assert_eq!(imgs["status"], "synced");
        assert_eq!(c.get("boot-resources/", &[("type", "bogus")]).await.status, 400);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn ssh_keys_users_and_tokens() {
    within(async {
        let (sim, c) = sim_with(false).await;
        use base64::Engine;
        let blob = base64::engine::general_purpose::STANDARD
            .encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345");
        let key = format!("ssh-ed25519 {blob} cloud@main");
        let r = c.send("POST", "account/prefs/sshkeys/", &[], &[("key", key.as_str())]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["id"].as_u64().unwrap();
        let r = c.send("POST", "account/prefs/sshkeys/", &[], &[("key", key.as_str())]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, r#"{"__all__": ["This key has already been added for this user."]}"#)
        );
        let r = c.send("POST", "account/prefs/sshkeys/", &[], &[("key", "ssh-rsa AAAA")]).await;
        assert_eq!((r.status, r.body.as_str()), (400, r#"{"key": ["Invalid SSH public key: ssh-rsa AAAA"]}"#));
        let other = Client::new(&sim, Some(&sim.create_api_key("dave", false)));
        let r = other.send("DELETE", &format!("account/prefs/sshkeys/{id}/"), &[], &[]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "Can't delete a key you don't own."));
        assert_eq!(c.send("DELETE", &format!("account/prefs/sshkeys/{id}/"), &[], &[]).await.status, 204);
        let me = c.get("users/", &[("op", "whoami")]).await.json();
        assert_eq!((me["username"].as_str(), me["is_superuser"].as_bool()), (Some("admin"), Some(true)));
        let t = c.op("account/", "create_authorisation_token", &[("name", "cli")]).await.json();
        let new_key = format!(
            "{}:{}:{}",
            t["consumer_key"].as_str().unwrap(),
            t["token_key"].as_str().unwrap(),
            t["token_secret"].as_str().unwrap()
        );
        let c2 = Client::new(&sim, Some(&new_key));
        assert_eq!(c2.get("users/", &[("op", "whoami")]).await.json()["username"], "admin");
        // Devices.
        let d = c
            .send("POST", "devices/", &[], &[("hostname", "router"), ("mac_addresses", "52:54:00:00:00:aa")])
            .await
            .json();
        assert_eq!(d["node_type"], 1);
        let dsid = d["system_id"].as_str().unwrap().to_owned();
        assert_eq!(c.get("devices/", &[]).await.json().as_array().unwrap().len(), 1);
        assert_eq!(c.send("DELETE", &format!("devices/{dsid}/"), &[], &[]).await.status, 204);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn hook_fires_with_the_right_environment() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hook.log");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nud=$(cat \"$MAAS_SIM_USER_DATA\")\n\
                 printf '%s|%s|%s|%s|%s|%s\\n' \"$MAAS_SIM_EVENT\" \"$MAAS_SIM_HOSTNAME\" \"$MAAS_SIM_SYSTEM_ID\" \
                 \"$MAAS_SIM_MACS\" \"$MAAS_SIM_DISTRO_SERIES\" \"$ud\" >> {0}\n",
                out.display()
            ),
        )
        .unwrap();
        let mut cfg = Config::for_tests();
        cfg.enlisted = true;
        cfg.hook = Some(format!("sh {}", script.display()).into());
        let sim = maas_sim::start(cfg).await.unwrap();
        let c = Client::new(&sim, Some(&sim.api_key()));
        let sid = sid_by_host(&c, "server2").await;
        use base64::Engine;
        let ud = base64::engine::general_purpose::STANDARD.encode("#cloud-config\n");
        c.op(&format!("machines/{sid}/"), "deploy", &[("distro_series", "jammy"), ("user_data", ud.as_str())]).await;
        let read = || std::fs::read_to_string(&out).unwrap_or_default();
        let start = std::time::Instant::now();
        while !read().contains("deployed|") {
            assert!(start.elapsed() < Duration::from_secs(10), "hook never ran: {}", read());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            read().starts_with(&format!("deployed|server2|{sid}|52:54:00:00:00:02|jammy|#cloud-config")),
            "{}",
            read()
        );
        // Powering off a deployed machine fires powered-off once the power state changes.
        let m = c.op(&format!("machines/{sid}/"), "power_off", &[]).await.json();
        assert_eq!(m["power_state"], "on", "the power state changes after the reply");
        while !read().contains("powered-off|") {
            assert!(start.elapsed() < Duration::from_secs(10), "power-off hook never ran: {}", read());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c.get(&format!("machines/{sid}/"), &[("op", "query_power_state")]).await.json()["state"], "off");
        // Released while off: READY inside the request.
        let m = c.op(&format!("machines/{sid}/"), "release", &[]).await.json();
        assert_eq!(m["status"], 4);
        while !read().contains("released|") {
            assert!(start.elapsed() < Duration::from_secs(10), "release hook never ran: {}", read());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(read().contains(&format!("released|server2|{sid}|")));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn faults_and_request_log() {
    within(async {
        let (sim, c) = sim_with(true).await;
        sim.inject(Fault::Status { status: 503, path_prefix: Some("/MAAS/api/2.0/machines/".into()), count: 3 });
        for _ in 0..3 {
            let r = c.get("machines/", &[]).await;
            assert_eq!(r.status, 503);
            assert_eq!(r.headers["retry-after"], "10");
        }
        assert_eq!(c.get("subnets/", &[]).await.status, 200, "other paths are unaffected");
        assert_eq!(c.get("machines/", &[]).await.status, 200);
        let log = sim.request_log();
        let machine_calls: Vec<u16> =
            log.iter().filter(|l| l.path == "/MAAS/api/2.0/machines/").map(|l| l.status).collect();
        assert_eq!(machine_calls, vec![503, 503, 503, 200]);

        // The same through the admin HTTP endpoints.
        let http = reqwest::Client::new();
        let admin = format!("http://{}/_sim/", sim.addr());
        let r = http.post(format!("{admin}faults")).body(r#"{"kind":"drop","count":1}"#).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let url = format!("{}/api/2.0/version/", sim.base_url());
        assert!(http.get(&url).send().await.is_err(), "the connection is dropped");
        assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 200);
        http.post(format!("{admin}faults")).body(r#"{"kind":"latency","ms":300,"count":1}"#).send().await.unwrap();
        let t = std::time::Instant::now();
        http.get(&url).send().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300));
        http.post(format!("{admin}faults")).body(r#"{"kind":"status","status":500,"count":5}"#).send().await.unwrap();
        assert_eq!(http.delete(format!("{admin}faults")).send().await.unwrap().status().as_u16(), 204);
        assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 200);
        let logged: Value = http.get(format!("{admin}requests")).send().await.unwrap().json().await.unwrap();
        assert!(logged.as_array().unwrap().iter().any(|l| l["status"] == 0), "the dropped request is logged");
        let r = http.post(format!("{admin}faults")).body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn binary_prints_key_and_readiness_then_stops_on_sigterm() {
    within(async {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_maas-sim"))
            .args(["--listen", "127.0.0.1:0", "--time-scale", "0.01", "--state-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let key_line = lines.next_line().await.unwrap().unwrap();
        let key = key_line.strip_prefix("api_key=").expect("api_key= first").to_owned();
        let addr = metalfleet_common::readiness::parse(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let file = dir.path().join("api-key");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), key);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let k = split(&key);
        let r = reqwest::Client::new()
            .get(format!("http://{addr}/MAAS/api/2.0/machines/"))
            .header("Authorization", oauth_header(&k, &fresh_nonce(), now()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let pid = child.id().unwrap().to_string();
        let st = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(st.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
        assert_eq!(status.code(), Some(0));
    })
    .await;
}

/// The stretch check: python-libmaas 0.6.8 (a real MAAS client) drives the sim through `tests/libmaas_drive.py`.
/// Runs when `MAAS_SIM_PYTHON` (default `python3`) can import `maas.client`; otherwise it records its skip.
#[tokio::test]
async fn python_libmaas_drives_the_sim() {
    within(async {
        let python = std::env::var("MAAS_SIM_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let hint = "pip install python-libmaas; set MAAS_SIM_PYTHON";
        metalfleet_skip::require!(metalfleet_skip::python_module(&python, "maas.client", hint));
        let (sim, _) = sim_with(true).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/libmaas_drive.py");
        let out = tokio::process::Command::new(&python)
            .arg(script)
            .arg(format!("{}/", sim.base_url()))
            .arg(sim.api_key())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "libmaas failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("libmaas ok"), "{stdout}");
        sim.shutdown().await;
    })
    .await;
}

/// Every status against the ops a coordinator uses (maas-api.md 3.3): accepted where MAAS accepts, otherwise
/// refused with MAAS's status code and body.
#[tokio::test]
async fn every_op_in_every_status() {
    use maas_sim::status::{ALL, Status};
    within(async {
        let (sim, c) = sim_with(true).await;
        let sid = sid_by_host(&c, "server1").await;
        let path = format!("machines/{sid}/");
        for status in ALL {
            let label = status.label();
            let cases: [(&str, bool, u16, String); 6] = [
                (
                    "deploy",
                    matches!(status, Status::Ready | Status::Allocated),
                    409,
                    format!("Can't deploy a machine that is in the '{label}' state"),
                ),
                (
                    "release",
                    matches!(
                        status,
                        Status::Ready
                            | Status::Releasing
                            | Status::Allocated
                            | Status::Reserved
                            | Status::Broken
                            | Status::Deploying
                            | Status::Deployed
                            | Status::FailedDeployment
                            | Status::FailedDiskErasing
                            | Status::FailedReleasing
                    ),
                    409,
                    format!("Machine cannot be released in its current state ('{label}')."),
                ),
                (
                    "commission",
                    matches!(status, Status::New | Status::Ready | Status::FailedCommissioning | Status::Broken),
                    400,
                    r#"{"__all__": ["Commission is not available because of the current state of the node."]}"#
                        .to_owned(),
                ),
                (
                    "abort",
                    matches!(status, Status::Commissioning | Status::Deploying | Status::DiskErasing | Status::Testing),
                    409,
                    format!("Cannot abort in current state: node {sid} is in state {label}."),
                ),
                ("mark_fixed", status == Status::Broken, 409, "Can't mark a non-broken node as 'Ready'.".to_owned()),
                (
                    "lock",
                    matches!(status, Status::Deployed | Status::Deploying),
                    409,
                    "Can't lock, node is not deployed or deploying".to_owned(),
                ),
            ];
            for (op, allowed, code, body) in cases {
                assert!(sim.force_status("server1", status));
                let r = c.op(&path, op, &[]).await;
                if allowed {
                    assert_eq!(r.status, 200, "{op} in {label}: {}", r.body);
                } else {
                    assert_eq!((r.status, r.body.as_str()), (code, body.as_str()), "{op} in {label}");
                }
            }
        }
        sim.shutdown().await;
    })
    .await;
}
