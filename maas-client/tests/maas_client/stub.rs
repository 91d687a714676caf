//! The client's wire format and error classes against a tiny loopback HTTP stub that answers from a script.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maas_client::{self as maas, ApiKey, Client, Error, NodeStatus};

use super::{deadline, test_config};

/// One request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    auth: String,
    form: Vec<(String, String)>,
}

impl Seen {
    fn op(&self) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == "op").map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    retry_after: Option<u64>,
    delay: Duration,
}

fn text(status: u16, body: &str) -> Answer {
    Answer { status, content_type: "text/plain", body: body.to_owned(), retry_after: None, delay: Duration::ZERO }
}

fn json(status: u16, body: &str) -> Answer {
    Answer { status, content_type: "application/json", body: body.to_owned(), retry_after: None, delay: Duration::ZERO }
}

type Script = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

#[derive(Clone)]
struct StubState {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
}

struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    /// Starts the stub; `script(request, index)` decides each answer.
    async fn start(script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = StubState { seen: seen.clone(), script: Arc::new(script) };
        let app = axum::Router::new().fallback(handle).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/MAAS", self.addr)
    }

    fn client(&self, retries: u32) -> Client {
        Client::with_key(&test_config(&self.url(), retries), ApiKey::parse("ck:tk:s3cret").unwrap()).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn pairs(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

async fn handle(State(state): State<StubState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: pairs(uri.query().unwrap_or("")),
        auth: headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        form: pairs(&String::from_utf8_lossy(&body)),
    };
    let index = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let answer = (state.script)(&seen, index);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    response.headers_mut().insert("content-type", answer.content_type.parse().unwrap());
    if let Some(secs) = answer.retry_after {
        response.headers_mut().insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

const MACHINE_READY: &str =
    r#"{"system_id": "abc123", "hostname": "server2", "status": 4, "status_name": "Ready", "power_state": "off"}"#;
const MACHINE_ALLOCATED: &str =
    r#"{"system_id": "abc123", "hostname": "server2", "status": 10, "status_name": "Allocated", "power_state": "off"}"#;
const MACHINE_DEPLOYING: &str =
    r#"{"system_id": "abc123", "hostname": "server2", "status": 9, "status_name": "Deploying", "power_state": "on"}"#;
const WHOAMI: &str = r#"{"username": "admin", "email": "a@example.com", "is_superuser": true, "is_local": true}"#;

/// piston's OAuth header parser, written independently of the client: strip `OAuth `, split on `,`, skip realm,
/// split on the first `=`, strip quotes, percent-decode.
fn piston_parse(header: &str) -> BTreeMap<String, String> {
    let rest = header.strip_prefix("OAuth ").expect("header starts with `OAuth `");
    let mut out = BTreeMap::new();
    for piece in rest.split(',') {
        if piece.contains("realm") {
            continue;
        }
        let (name, value) = piece.split_once('=').expect("each piece is name=value");
        let value = value.trim().trim_matches('"');
        let decoded = percent_decode(value);
        out.insert(name.trim().to_owned(), decoded);
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("valid %XX"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn oauth_header_is_what_piston_parses() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|_, _| json(200, WHOAMI)).await;
        let key = "ck0123456789abcdef:tk0123456789abcdef:se&cr%et+/x";
        let client = Client::with_key(&test_config(&stub.url(), 0), ApiKey::parse(key).unwrap()).unwrap();
        assert_eq!(client.whoami().await.unwrap().username, "admin");
        assert_eq!(client.whoami().await.unwrap().username, "admin");
        let seen = stub.seen();
        assert_eq!(seen.len(), 2);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut nonces = Vec::new();
        for request in &seen {
            // The exact shape python-libmaas sends: realm first, then the six oauth_ fields, quoted, comma-space.
            let names: Vec<&str> =
                request.auth.split(", ").map(|p| p.split('=').next().unwrap().trim_start_matches("OAuth ")).collect();
            assert_eq!(
                names,
                [
                    "realm",
                    "oauth_nonce",
                    "oauth_timestamp",
                    "oauth_version",
                    "oauth_signature_method",
                    "oauth_consumer_key",
                    "oauth_token",
                    "oauth_signature"
                ],
                "{}",
                request.auth
            );
            assert!(request.auth.starts_with("OAuth realm=\"OAuth\", oauth_nonce=\""), "{}", request.auth);
            let fields = piston_parse(&request.auth);
            assert_eq!(fields["oauth_consumer_key"], "ck0123456789abcdef");
            assert_eq!(fields["oauth_token"], "tk0123456789abcdef");
            assert_eq!(fields["oauth_signature_method"], "PLAINTEXT");
            assert_eq!(fields["oauth_version"], "1.0");
            // PLAINTEXT: escape(consumer_secret "") + "&" + escape(token_secret), compared after one decode.
            assert_eq!(fields["oauth_signature"], "&se%26cr%25et%2B%2Fx", "signature is `&` + the escaped secret");
            let ts: u64 = fields["oauth_timestamp"].parse().unwrap();
            assert!(now.abs_diff(ts) <= 5, "timestamp {ts} is current");
            assert!(!fields["oauth_nonce"].is_empty());
            nonces.push(fields["oauth_nonce"].clone());
            // The raw header carries the signature percent-encoded once more.
            assert!(request.auth.ends_with("oauth_signature=\"%26se%2526cr%2525et%252B%252Fx\""), "{}", request.auth);
        }
        assert_ne!(nonces[0], nonces[1], "every request has a fresh nonce");
    })
    .await;
}

#[tokio::test]
async fn requests_are_form_encoded_with_op_in_the_query() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|seen, _| match (seen.method.as_str(), seen.op()) {
            ("GET", None) if seen.path.ends_with("/machines/") => json(200, &format!("[{MACHINE_READY}]")),
            ("POST", Some("deploy")) => json(200, MACHINE_DEPLOYING),
            ("POST", Some("release")) => json(200, MACHINE_READY),
            ("POST", None) => json(200, MACHINE_READY),
            ("POST", Some("set_config")) => text(200, "OK"),
            ("PUT", None) => json(200, r#"{"id": 5001, "vid": 0, "dhcp_on": true, "primary_rack": "pd4hn6"}"#),
            _ => text(400, "Unrecognised signature"),
        })
        .await;
        let client = stub.client(0);
        let filter = maas::MachineFilter {
            hostnames: vec!["server1".into(), "server2".into()],
            statuses: vec![NodeStatus::Ready, NodeStatus::FailedCommissioning],
            ..Default::default()
        };
        assert_eq!(client.machines(&filter).await.unwrap()[0].system_id, "abc123");
        let deploy = maas::DeployOptions {
            distro_series: Some("jammy".into()),
            user_data: Some(b"#cloud-config\nruncmd: [echo hi]\n".to_vec()),
            ..Default::default()
        };
        assert_eq!(client.deploy("abc123", &deploy).await.unwrap().status, NodeStatus::Deploying);
        let release =
            maas::ReleaseOptions { erase: true, quick_erase: true, comment: Some("done".into()), ..Default::default() };
        client.release("abc123", &release).await.unwrap();
        let new = maas::NewMachine {
            architecture: "amd64/generic".into(),
            mac_addresses: vec!["52:54:00:00:00:01".into(), "52:54:00:00:01:01".into()],
            hostname: Some("server1".into()),
            power_type: Some("amt".into()),
            power_parameters: BTreeMap::from([("power_address".to_owned(), "172.16.15.1".to_owned())]),
            commission: Some(false),
            ..Default::default()
        };
        client.create_machine(&new).await.unwrap();
        client.set_upstream_dns(&["8.8.8.8".into(), "1.1.1.1".into()]).await.unwrap();
        let update =
            maas::VlanUpdate { dhcp_on: Some(true), primary_rack: Some("pd4hn6".into()), ..Default::default() };
        assert!(client.update_vlan(0, 0, &update).await.unwrap().dhcp_on);

        let seen = stub.seen();
        let q = |i: usize| seen[i].query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        let f = |i: usize| seen[i].form.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(seen[0].path, "/MAAS/api/2.0/machines/");
        assert_eq!(q(0), ["hostname=server1", "hostname=server2", "status=ready", "status=failed_commissioning"]);
        assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/MAAS/api/2.0/machines/abc123/"));
        assert_eq!(q(1), ["op=deploy"], "op goes in the query string, even on POST");
        assert_eq!(
            f(1),
            ["distro_series=jammy", "user_data=I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtlY2hvIGhpXQo="],
            "user data is base64"
        );
        assert_eq!(f(2), ["erase=true", "quick_erase=true", "comment=done"], "booleans are true/false");
        assert_eq!(
            f(3),
            [
                "architecture=amd64/generic",
                "mac_addresses=52:54:00:00:00:01",
                "mac_addresses=52:54:00:00:01:01",
                "hostname=server1",
                "power_type=amt",
                "commission=false",
                "power_parameters_power_address=172.16.15.1"
            ]
        );
        assert_eq!(q(4), ["op=set_config"]);
        assert_eq!(f(4), ["name=upstream_dns", "value=8.8.8.8 1.1.1.1"]);
        assert_eq!((seen[5].method.as_str(), seen[5].path.as_str()), ("PUT", "/MAAS/api/2.0/fabrics/0/vlans/0/"));
        assert_eq!(f(5), ["dhcp_on=true", "primary_rack=pd4hn6"]);
    })
    .await;
}

#[tokio::test]
async fn each_error_class_carries_op_machine_and_maas_text() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|seen, _| match seen.op() {
            Some("commission") => {
                json(400, r#"{"__all__": ["Commission is not available because of the current state of the node."]}"#)
            }
            Some("get_config") => text(400, "No provided name!"),
            Some("whoami") => text(401, "Authorization Error: 'Invalid access token: tk'"),
            Some("mark_broken") => text(403, ""),
            Some("deploy") => text(409, "Can't deploy a machine that is in the 'Deployed' state"),
            Some("abort") => text(500, "Traceback: boom"),
            Some("is_importing") => text(200, "not json"),
            _ => text(404, "No Machine matches the given query."),
        })
        .await;
        let client = stub.client(0);
        match client.commission("abc123", &maas::CommissionOptions::default()).await.unwrap_err() {
            Error::BadRequest { op, machine, fields, .. } => {
                assert_eq!((op, machine.0.as_deref()), ("commission", Some("abc123")));
                assert!(fields["__all__"][0].starts_with("Commission is not available"));
            }
            other => panic!("{other:?}"),
        }
        match client.get_config("").await.unwrap_err() {
            Error::BadRequest { fields, message, .. } => {
                assert!(fields.is_empty());
                assert_eq!(message, "No provided name!");
            }
            other => panic!("{other:?}"),
        }
        let e = client.whoami().await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized { message, .. } if message.contains("Invalid access token")), "{e:?}");
        let e = client.mark_broken("abc123", Some("disk")).await.unwrap_err();
        assert!(matches!(&e, Error::Forbidden { op: "mark_broken", .. }), "{e:?}");
        let e = client.deploy("abc123", &maas::DeployOptions::default()).await.unwrap_err();
        match &e {
            Error::Conflict { op, machine, message } => {
                assert_eq!((*op, machine.0.as_deref()), ("deploy", Some("abc123")));
                assert_eq!(message, "Can't deploy a machine that is in the 'Deployed' state");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("deploy on machine abc123"), "{e}");
        let e = client.machine("zzz999").await.unwrap_err();
        assert!(matches!(&e, Error::NotFound { what, .. } if what == "machine zzz999"), "{e:?}");
        let e = client.abort("abc123", None).await.unwrap_err();
        assert!(matches!(&e, Error::Server { status: 500, .. }), "{e:?}");
        assert!(!e.is_retryable());
        let e = client.is_importing().await.unwrap_err();
        assert!(matches!(&e, Error::Decode { op: "is_importing", .. }), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn get_is_retried_on_503_then_succeeds_and_gives_up_after_retries() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|seen, i| match seen.op() {
            Some("whoami") if i < 2 => text(503, "Unable to connect to any rack controller"),
            Some("whoami") => json(200, WHOAMI),
            _ => text(503, "still down"),
        })
        .await;
        let client = stub.client(3);
        assert_eq!(client.whoami().await.unwrap().username, "admin");
        assert_eq!(stub.seen().len(), 3, "two 503s, then the answer");
        let e = client.is_importing().await.unwrap_err();
        assert!(
            matches!(&e, Error::Unavailable { op: "is_importing", message, .. } if message == "still down"),
            "{e:?}"
        );
        assert_eq!(stub.seen().len(), 3 + 4, "one try and three retries");
    })
    .await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|_, i| {
            if i == 0 { Answer { retry_after: Some(1), ..text(503, "rpc busy") } } else { json(200, WHOAMI) }
        })
        .await;
        let client = stub.client(2);
        let started = Instant::now();
        client.whoami().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn non_idempotent_posts_are_not_retried_blindly() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|_, _| text(503, "busy")).await;
        let client = stub.client(3);
        let e = client.allocate(&maas::AllocateRequest { name: Some("server2".into()), ..Default::default() }).await;
        assert!(matches!(e, Err(Error::Unavailable { op: "allocate", .. })));
        assert_eq!(stub.seen().len(), 1, "allocate is sent once");
    })
    .await;
}

#[tokio::test]
async fn deploy_rereads_the_machine_before_retrying() {
    deadline(Duration::from_secs(20), async {
        // The deploy went through although its answer was lost: the re-read shows Deploying, so no second POST.
        let stub = Stub::start(|seen, _| match seen.method.as_str() {
            "POST" => text(503, "lost"),
            _ => json(200, MACHINE_DEPLOYING),
        })
        .await;
        let m = stub.client(3).deploy("abc123", &maas::DeployOptions::default()).await.unwrap();
        assert_eq!(m.status, NodeStatus::Deploying);
        let methods: Vec<String> = stub.seen().iter().map(|s| s.method.clone()).collect();
        assert_eq!(methods, ["POST", "GET"]);

        // The machine did not move: the deploy is sent again.
        let stub = Stub::start(|seen, i| match seen.method.as_str() {
            "POST" if i == 0 => text(503, "busy"),
            "POST" => json(200, MACHINE_DEPLOYING),
            _ => json(200, MACHINE_ALLOCATED),
        })
        .await;
        let m = stub.client(3).deploy("abc123", &maas::DeployOptions::default()).await.unwrap();
        assert_eq!(m.status, NodeStatus::Deploying);
        let methods: Vec<String> = stub.seen().iter().map(|s| s.method.clone()).collect();
        assert_eq!(methods, ["POST", "GET", "POST"]);
    })
    .await;
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    deadline(Duration::from_secs(20), async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener); // Nothing listens there any more.
        let url = format!("http://{addr}/MAAS");
        let client = Client::with_key(&test_config(&url, 1), ApiKey::parse("a:b:c").unwrap()).unwrap();
        let e = client.machines(&maas::MachineFilter::default()).await.unwrap_err();
        match &e {
            Error::Connect { url, op, .. } => {
                assert_eq!(*op, "machines");
                assert_eq!(url, &format!("http://{addr}/MAAS/api/2.0/machines/"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        assert!(e.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn slow_answers_time_out() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|_, _| Answer { delay: Duration::from_secs(5), ..json(200, WHOAMI) }).await;
        let mut cfg = test_config(&stub.url(), 0);
        cfg.request_timeout = Duration::from_millis(200);
        let client = Client::with_key(&cfg, ApiKey::parse("a:b:c").unwrap()).unwrap();
        let started = Instant::now();
        let e = client.whoami().await.unwrap_err();
        assert!(matches!(&e, Error::Timeout { timeout, .. } if *timeout == Duration::from_millis(200)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test]
async fn scalar_answers_and_config_helpers() {
    deadline(Duration::from_secs(20), async {
        let stub = Stub::start(|seen, _| {
            let name = seen.query.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str());
            match (seen.op(), name) {
                (Some("get_config"), Some("upstream_dns")) => json(200, "\"8.8.8.8 1.1.1.1\""),
                (Some("get_config"), Some("dnssec_validation")) => json(200, "\"no\""),
                (Some("get_config"), Some("kernel_opts")) => json(200, "null"),
                (Some("is_importing"), _) => json(200, "true"),
                (Some("power_off"), _) => json(200, "null"),
                (Some("query_power_state"), _) => json(200, r#"{"state": "on"}"#),
                (Some("import"), _) => text(200, "Import of boot resources started"),
                _ => text(204, ""),
            }
        })
        .await;
        let client = stub.client(0);
        assert_eq!(client.upstream_dns().await.unwrap(), ["8.8.8.8", "1.1.1.1"]);
        assert_eq!(client.dnssec_validation().await.unwrap(), maas::DnssecValidation::No);
        assert_eq!(client.kernel_opts().await.unwrap(), None);
        assert!(client.is_importing().await.unwrap());
        assert_eq!(client.power_off("abc123", maas::StopMode::Soft, None).await.unwrap(), None);
        assert_eq!(client.query_power_state("abc123").await.unwrap(), maas::PowerState::On);
        client.import_boot_resources().await.unwrap();
        client.delete_ip_range(3).await.unwrap();
        let seen = stub.seen();
        assert_eq!(seen.last().unwrap().method, "DELETE");
        assert_eq!(seen.last().unwrap().path, "/MAAS/api/2.0/ipranges/3/");
    })
    .await;
}
