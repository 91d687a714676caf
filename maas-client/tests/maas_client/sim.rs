//! The client against maas-sim: every call, success and each error class.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use maas_client::{self as maas, ApiKey, Client, Error, Machine, NodeStatus, PowerState, SubnetRef};

use super::{deadline, test_config};

/// A running sim and an admin client for it.
pub struct Sim {
    pub handle: maas_sim::Handle,
    pub client: Client,
}

pub async fn start(enlisted: bool, hook: Option<PathBuf>) -> Sim {
    let mut cfg = maas_sim::Config::for_tests();
    cfg.enlisted = enlisted;
    cfg.hook = hook;
    cfg.time_scale = 0.005;
    let handle = maas_sim::start(cfg).await.expect("maas-sim starts");
    let client = client_for(&handle, &handle.api_key(), 3);
    Sim { handle, client }
}

/// A client for the sim. maas-sim sends MAAS's `Retry-After: 10` with its 503s; the cap keeps the tests fast
/// (honouring Retry-After itself is tested against the stub).
pub fn client_for(handle: &maas_sim::Handle, key: &str, retries: u32) -> Client {
    let mut cfg = test_config(&handle.base_url(), retries);
    cfg.max_backoff = Duration::from_millis(50);
    Client::with_key(&cfg, ApiKey::parse(key).unwrap()).unwrap()
}

/// Polls the machine until `accept` holds, within `limit`.
pub async fn wait_machine(
    client: &Client,
    system_id: &str,
    limit: Duration,
    accept: impl Fn(&Machine) -> bool,
) -> Machine {
    let started = Instant::now();
    loop {
        let m = client.machine(system_id).await.expect("machine read");
        if accept(&m) {
            return m;
        }
        assert!(started.elapsed() < limit, "machine {system_id} stuck in {} ({:?})", m.status, m.status_message);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_status(client: &Client, system_id: &str, status: NodeStatus) -> Machine {
    wait_machine(client, system_id, Duration::from_secs(20), |m| m.status == status).await
}

async fn by_hostname(client: &Client, hostname: &str) -> Machine {
    let filter = maas::MachineFilter { hostnames: vec![hostname.into()], ..Default::default() };
    let mut found = client.machines(&filter).await.unwrap();
    assert_eq!(found.len(), 1, "one machine called {hostname}");
    found.remove(0)
}

#[tokio::test]
async fn sim_machine_calls() {
    deadline(Duration::from_secs(60), async {
        let sim = start(true, None).await;
        let c = &sim.client;

        // List with filters: everything is Ready, filters by status key, hostname and constraints.
        let all = c.machines(&maas::MachineFilter::default()).await.unwrap();
        assert_eq!(all.len(), 4);
        let ready = maas::MachineFilter { statuses: vec![NodeStatus::Ready], ..Default::default() };
        assert_eq!(c.machines(&ready).await.unwrap().len(), 4);
        let deployed = maas::MachineFilter { statuses: vec![NodeStatus::Deployed], ..Default::default() };
        assert!(c.machines(&deployed).await.unwrap().is_empty());
        let big = maas::MachineFilter { min_memory_mib: Some(32 * 1024), ..Default::default() };
        assert_eq!(c.machines(&big).await.unwrap().len(), 2);

        // Read, hardware details, script results.
        let s1 = by_hostname(c, "server1").await;
        let m = c.machine(&s1.system_id).await.unwrap();
        assert_eq!((m.hostname.as_str(), m.status), ("server1", NodeStatus::Ready));
        assert_eq!(m.mac_addresses(), ["52:54:00:00:00:01"]);
        let hw = c.hardware_details(&s1.system_id).await.unwrap();
        assert_eq!((hw.cpu_count, hw.memory_bytes), (4, 12 * 1024 * 1024 * 1024));
        assert_eq!(hw.disks.len(), 1);
        assert_eq!(hw.disks[0].size, 240_057_409_536);
        let results = c.machine_results(&s1.system_id, &maas::ResultsQuery::default()).await.unwrap();
        assert!(results.iter().all(|s| s.system_id == s1.system_id));
        let query = maas::ResultsQuery {
            result_type: Some("commissioning".into()),
            include_output: true,
            ..Default::default()
        };
        let commissioning = c.machine_results(&s1.system_id, &query).await.unwrap();
        assert!(commissioning.iter().all(|s| s.set_type == 0), "{commissioning:?}");
        let bson = c.machine_details_bson(&s1.system_id).await.unwrap();
        // A BSON document starts with its own length as a little-endian i32.
        assert!(bson.len() >= 5);
        assert_eq!(i32::from_le_bytes([bson[0], bson[1], bson[2], bson[3]]) as usize, bson.len());
        let not_ready = maas::MachineFilter { not_statuses: vec![NodeStatus::Ready], ..Default::default() };
        assert!(c.machines(&not_ready).await.unwrap().is_empty());

        // Allocate by name, by system_id, by constraints.
        let a =
            c.allocate(&maas::AllocateRequest { name: Some("server1".into()), ..Default::default() }).await.unwrap();
        assert_eq!((a.hostname.as_str(), a.status), ("server1", NodeStatus::Allocated));
        let s2 = by_hostname(c, "server2").await;
        let b = c
            .allocate(&maas::AllocateRequest { system_id: Some(s2.system_id.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(b.system_id, s2.system_id);
        let big =
            c.allocate(&maas::AllocateRequest { min_memory_mib: Some(32 * 1024), ..Default::default() }).await.unwrap();
        assert!(big.memory >= 32 * 1024);

        // Deploy with user data, lock/unlock, power, release with erase.
        let user_data = b"#cloud-config\nruncmd: [touch /tmp/agent]\n".to_vec();
        let options = maas::DeployOptions {
            distro_series: Some("jammy".into()),
            user_data: Some(user_data),
            ..Default::default()
        };
        let d = c.deploy(&s1.system_id, &options).await.unwrap();
        assert_eq!((d.status, d.distro_series.as_str()), (NodeStatus::Deploying, "jammy"));
        wait_status(c, &s1.system_id, NodeStatus::Deployed).await;
        assert!(c.lock(&s1.system_id, Some("prod")).await.unwrap().locked);
        assert!(!c.unlock(&s1.system_id, None).await.unwrap().locked);
        assert_eq!(c.query_power_state(&s1.system_id).await.unwrap(), PowerState::On);
        c.power_off(&s1.system_id, maas::StopMode::Hard, Some("test")).await.unwrap();
        wait_machine(c, &s1.system_id, Duration::from_secs(20), |m| m.power_state == PowerState::Off).await;
        c.power_on(&s1.system_id, None).await.unwrap();
        wait_machine(c, &s1.system_id, Duration::from_secs(20), |m| m.power_state == PowerState::On).await;
        let release = maas::ReleaseOptions { erase: true, quick_erase: true, ..Default::default() };
        let r = c.release(&s1.system_id, &release).await.unwrap();
        assert!(
            matches!(r.status, NodeStatus::DiskErasing | NodeStatus::Releasing | NodeStatus::Ready),
            "{}",
            r.status
        );
        let r = wait_status(c, &s1.system_id, NodeStatus::Ready).await;
        assert_eq!(r.owner, None);

        // Broken and fixed (the caller owns server2), commission then abort, commission to Ready.
        let broken = c.mark_broken(&s2.system_id, Some("bad dimm")).await.unwrap();
        assert_eq!(broken.status, NodeStatus::Broken);
        assert_eq!(c.machine(&s2.system_id).await.unwrap().error_description, "bad dimm");
        let fixed = c.mark_fixed(&s2.system_id, None).await.unwrap();
        assert_ne!(fixed.status, NodeStatus::Broken);
        let s4 = by_hostname(c, "server4").await;
        let options = maas::CommissionOptions {
            enable_ssh: Some(false),
            skip_networking: Some(true),
            testing_scripts: vec!["none".into()],
            ..Default::default()
        };
        let com = c.commission(&s4.system_id, &options).await.unwrap();
        assert!(matches!(com.status, NodeStatus::Commissioning | NodeStatus::Testing), "{}", com.status);
        c.abort(&s4.system_id, Some("changed my mind")).await.unwrap();
        wait_machine(c, &s4.system_id, Duration::from_secs(20), |m| !m.status.is_transient()).await;
        c.commission(&s4.system_id, &maas::CommissionOptions::default()).await.unwrap();
        wait_status(c, &s4.system_id, NodeStatus::Ready).await;

        // Tags.
        c.create_tag("db", Some("database servers")).await.unwrap();
        c.tag_machines("db", std::slice::from_ref(&s4.system_id), &[]).await.unwrap();
        assert!(c.tags().await.unwrap().iter().any(|t| t.name == "db"));
        assert_eq!(c.machine(&s4.system_id).await.unwrap().tag_names, ["db"]);
        let tagged = maas::MachineFilter { tags: vec!["db".into()], ..Default::default() };
        assert_eq!(c.machines(&tagged).await.unwrap().len(), 1);

        sim.handle.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sim_network_calls() {
    deadline(Duration::from_secs(60), async {
        let sim = start(true, None).await;
        let c = &sim.client;

        let subnets = c.subnets().await.unwrap();
        let subnet = subnets.iter().find(|s| s.cidr == "172.16.0.0/20").expect("the lab subnet");
        assert_eq!(subnet.gateway_ip.as_deref(), Some("172.16.0.1"));
        let by_cidr = c.subnet(&SubnetRef::Cidr("172.16.0.0/20".into())).await.unwrap();
        assert_eq!(by_cidr.id, subnet.id);
        let sref = SubnetRef::Id(subnet.id);
        let updated = c.update_subnet_dns_servers(&sref, &["172.16.0.3".into(), "1.1.1.1".into()]).await.unwrap();
        assert_eq!(updated.dns_servers, ["172.16.0.3", "1.1.1.1"]);
        assert_eq!(c.subnet(&sref).await.unwrap().dns_servers, ["172.16.0.3", "1.1.1.1"]);

        let fabrics = c.fabrics().await.unwrap();
        let fabric = &fabrics[0];
        let vlans = c.vlans(fabric.id).await.unwrap();
        let untagged = vlans.iter().find(|v| v.vid == 0).expect("untagged VLAN");
        let vlan = c.vlan(fabric.id, 0).await.unwrap();
        assert_eq!((vlan.id, vlan.dhcp_on), (untagged.id, false));

        let racks = c.rack_controllers().await.unwrap();
        let rack = racks.iter().find(|r| r.is_on_vlan(vlan.id)).expect("a rack on the VLAN");
        assert!(!rack.service_set.is_empty());
        assert!(rack.unhealthy_services().is_empty(), "{:?}", rack.unhealthy_services());
        assert_eq!(c.rack_controller(&rack.system_id).await.unwrap().hostname, rack.hostname);
        c.rack_boot_images(&rack.system_id).await.unwrap();

        // DHCP needs a dynamic range first: MAAS's own refusal, then the real sequence.
        let on =
            maas::VlanUpdate { dhcp_on: Some(true), primary_rack: Some(rack.system_id.clone()), ..Default::default() };
        match c.update_vlan(fabric.id, 0, &on).await.unwrap_err() {
            Error::BadRequest { fields, .. } => {
                assert!(fields["dhcp_on"][0].contains("dynamic IP range"), "{fields:?}")
            }
            other => panic!("{other:?}"),
        }
        let dynamic = c
            .create_ip_range(&maas::NewIpRange {
                range_type: maas::IpRangeType::Dynamic,
                start_ip: "172.16.11.1".into(),
                end_ip: "172.16.14.255".into(),
                subnet: Some(subnet.id),
                comment: Some("lab pool".into()),
            })
            .await
            .unwrap();
        assert_eq!((dynamic.range_type.clone(), dynamic.comment.as_str()), (maas::IpRangeType::Dynamic, "lab pool"));
        let reserved = c
            .create_ip_range(&maas::NewIpRange {
                range_type: maas::IpRangeType::Reserved,
                start_ip: "172.16.15.1".into(),
                end_ip: "172.16.15.50".into(),
                subnet: None,
                comment: None,
            })
            .await
            .unwrap();
        assert_eq!(c.ip_ranges().await.unwrap().len(), 2);
        assert_eq!(c.ip_range(reserved.id).await.unwrap().start_ip, "172.16.15.1");
        c.delete_ip_range(reserved.id).await.unwrap();
        assert_eq!(c.ip_ranges().await.unwrap().len(), 1);
        let vlan = c.update_vlan(fabric.id, 0, &on).await.unwrap();
        assert!(vlan.dhcp_on);
        assert_eq!(vlan.primary_rack.as_deref(), Some(rack.system_id.as_str()));
        assert_eq!(vlan.external_dhcp, None);

        let used = c.subnet_reserved_ranges(&sref).await.unwrap();
        assert!(used.iter().any(|r| r.start == "172.16.11.1" && r.purpose.iter().any(|p| p == "dynamic")), "{used:?}");
        let free = c.subnet_unreserved_ranges(&sref).await.unwrap();
        assert!(!free.is_empty());
        let stats = c.subnet_statistics(&sref).await.unwrap();
        assert!(stats.num_unavailable >= 1023, "{stats:?}");

        // Devices (the router).
        let router = c.create_device("router", &["aa:bb:cc:00:11:22".into()]).await.unwrap();
        assert_eq!(router.hostname, "router");
        assert!(c.devices().await.unwrap().iter().any(|d| d.mac_addresses() == ["aa:bb:cc:00:11:22"]));
        c.delete_device(&router.system_id).await.unwrap();
        assert!(c.devices().await.unwrap().is_empty());

        sim.handle.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sim_settings_images_and_accounts() {
    deadline(Duration::from_secs(60), async {
        let sim = start(true, None).await;
        let c = &sim.client;

        // Settings: upstream_dns comes back space-separated even when written with commas.
        assert!(c.upstream_dns().await.unwrap().is_empty());
        c.set_config("upstream_dns", "8.8.8.8,1.1.1.1").await.unwrap();
        assert_eq!(c.get_config("upstream_dns").await.unwrap(), serde_json::json!("8.8.8.8 1.1.1.1"));
        c.set_upstream_dns(&["9.9.9.9".into()]).await.unwrap();
        assert_eq!(c.upstream_dns().await.unwrap(), ["9.9.9.9"]);
        c.set_dnssec_validation(&maas::DnssecValidation::No).await.unwrap();
        assert_eq!(c.dnssec_validation().await.unwrap(), maas::DnssecValidation::No);
        c.set_kernel_opts("console=ttyS0").await.unwrap();
        assert_eq!(c.kernel_opts().await.unwrap().as_deref(), Some("console=ttyS0"));

        // Boot sources and selections: jammy is there, focal gets added, arches updated.
        let sources = c.boot_sources().await.unwrap();
        let source = &sources[0];
        assert!(source.url.contains("images.maas.io"));
        let selections = c.boot_source_selections(source.id).await.unwrap();
        assert!(selections.iter().any(|s| s.release == "jammy"));
        let focal = c
            .create_boot_source_selection(
                source.id,
                &maas::NewBootSourceSelection {
                    os: "ubuntu".into(),
                    release: "focal".into(),
                    arches: vec!["amd64".into()],
                    subarches: vec![],
                    labels: vec![],
                },
            )
            .await
            .unwrap();
        assert_eq!((focal.release.as_str(), focal.subarches.as_slice()), ("focal", ["*".to_owned()].as_slice()));
        let updated = c
            .update_boot_source_selection_arches(source.id, focal.id, &["amd64".into(), "arm64".into()])
            .await
            .unwrap();
        assert_eq!(updated.arches, ["amd64", "arm64"]);
        let created = c
            .create_boot_source("http://127.0.0.1:1/mirror/", Some("/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"))
            .await
            .unwrap();
        assert!(created.id > source.id);

        // Import, then stop, then import until synced.
        c.import_boot_resources().await.unwrap();
        c.stop_import_boot_resources().await.unwrap();
        c.import_boot_resources().await.unwrap();
        let started = Instant::now();
        while c.is_importing().await.unwrap() {
            assert!(started.elapsed() < Duration::from_secs(20), "import never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resources = c.boot_resources(None).await.unwrap();
        let jammy = resources.iter().find(|r| r.name == "ubuntu/jammy").expect("jammy imported");
        assert!(c.boot_resource(jammy.id).await.unwrap().is_synced());
        assert!(resources.iter().any(|r| r.name == "ubuntu/focal"));

        // SSH keys.
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF0fkY1cWn0b8s2lT2JmF0Qd3mN6xq6w7u2R3n5p0a9Z lab@main";
        let created = c.create_ssh_key(key).await.unwrap();
        assert_eq!(created.key, key);
        assert!(c.ssh_keys().await.unwrap().iter().any(|k| k.id == created.id));
        c.delete_ssh_key(created.id).await.unwrap();
        assert!(c.ssh_keys().await.unwrap().iter().all(|k| k.id != created.id));

        // Events, users, version.
        let s1 = by_hostname(c, "server1").await;
        c.deploy(&s1.system_id, &maas::DeployOptions::default()).await.unwrap();
        let page = c
            .events(&maas::EventQuery { ids: vec![s1.system_id.clone()], limit: Some(50), ..Default::default() })
            .await
            .unwrap();
        assert!(!page.events.is_empty());
        assert!(page.events.iter().all(|e| e.node.as_deref() == Some(s1.system_id.as_str())));
        let newest = page.events[0].id;
        let after = c.events(&maas::EventQuery { after: Some(newest), ..Default::default() }).await.unwrap();
        assert!(after.events.iter().all(|e| e.id > newest));
        let me = c.whoami().await.unwrap();
        assert!(me.is_superuser);
        let version = c.version().await.unwrap();
        assert!(version.version.starts_with("3.5"), "{}", version.version);
        assert!(version.capabilities.iter().any(|cap| cap == "authenticate-api"));

        sim.handle.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sim_error_classes() {
    deadline(Duration::from_secs(60), async {
        let sim = start(true, None).await;
        let c = &sim.client;
        let s1 = by_hostname(c, "server1").await;

        // 400 with a field map.
        let outside = maas::NewIpRange {
            range_type: maas::IpRangeType::Dynamic,
            start_ip: "10.9.9.1".into(),
            end_ip: "10.9.9.9".into(),
            subnet: Some(by_hostname_subnet(c).await),
            comment: None,
        };
        match c.create_ip_range(&outside).await.unwrap_err() {
            Error::BadRequest { op, fields, .. } => {
                assert_eq!(op, "create_ip_range");
                assert!(fields.keys().any(|k| k == "start_ip" || k == "end_ip"), "{fields:?}");
            }
            other => panic!("{other:?}"),
        }
        // 400 as text.
        match c.boot_resources(Some("bogus")).await.unwrap_err() {
            Error::BadRequest { fields, message, .. } => {
                assert!(fields.is_empty(), "{fields:?}");
                assert!(message.starts_with("Bad type 'bogus'"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = c.events(&maas::EventQuery { limit: Some(5000), ..Default::default() }).await.unwrap_err();
        assert!(matches!(&e, Error::BadRequest { message, .. } if message.contains("greater than limit: 1000")), "{e:?}");
        // 400 for commissioning in the wrong state is JSON `__all__`, not 409.
        c.deploy(&s1.system_id, &maas::DeployOptions::default()).await.unwrap();
        match c.commission(&s1.system_id, &maas::CommissionOptions::default()).await.unwrap_err() {
            Error::BadRequest { fields, machine, .. } => {
                assert_eq!(machine.0.as_deref(), Some(s1.system_id.as_str()));
                assert!(fields["__all__"][0].contains("Commission is not available"), "{fields:?}");
            }
            other => panic!("{other:?}"),
        }
        // 409 with MAAS's message.
        wait_status(c, &s1.system_id, NodeStatus::Deployed).await;
        match c.deploy(&s1.system_id, &maas::DeployOptions::default()).await.unwrap_err() {
            Error::Conflict { op, machine, message } => {
                assert_eq!((op, machine.0.as_deref()), ("deploy", Some(s1.system_id.as_str())));
                assert_eq!(message, "Can't deploy a machine that is in the 'Deployed' state");
            }
            other => panic!("{other:?}"),
        }
        // 404.
        let e = c.machine("nope42").await.unwrap_err();
        assert!(matches!(&e, Error::NotFound { what, message, .. } if what == "machine nope42" && message.contains("No Machine matches")), "{e:?}");
        // 401: a key MAAS does not know.
        let stranger = client_for(&sim.handle, "aaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbb:cccccccccccccccccccccccccccccccc", 3);
        let e = stranger.whoami().await.unwrap_err();
        assert!(matches!(&e, Error::Unauthorized { .. }), "{e:?}");
        // 403: a non-admin user may not change settings.
        let bob = client_for(&sim.handle, &sim.handle.create_api_key("bob", false), 0);
        let e = bob.set_config("upstream_dns", "8.8.8.8").await.unwrap_err();
        assert!(matches!(&e, Error::Forbidden { op: "set_config", .. }), "{e:?}");

        // 503 twice then success: the GET is retried (counted in the sim's request log).
        sim.handle.clear_request_log();
        sim.handle.inject(maas_sim::Fault::Status { status: 503, path_prefix: Some("/MAAS/api/2.0/machines/".into()), count: 2 });
        assert_eq!(c.machines(&maas::MachineFilter::default()).await.unwrap().len(), 4);
        let list_calls = sim.handle.request_log().iter().filter(|r| r.path == "/MAAS/api/2.0/machines/").count();
        assert_eq!(list_calls, 3, "two 503s and the answer");
        // 503 beyond the retries.
        sim.handle.inject(maas_sim::Fault::Status { status: 503, path_prefix: Some("/MAAS/api/2.0/version/".into()), count: 10 });
        let e = c.version().await.unwrap_err();
        assert!(matches!(&e, Error::Unavailable { op: "version", .. }), "{e:?}");
        sim.handle.clear_faults();
        // A dropped connection on a GET is retried.
        sim.handle.clear_request_log();
        sim.handle.inject(maas_sim::Fault::Drop { path_prefix: Some("/MAAS/api/2.0/users/".into()), count: 1 });
        assert!(c.whoami().await.unwrap().is_superuser);
        let statuses: Vec<u16> = sim.handle.request_log().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [0, 200], "dropped, then answered");
        // Latency beyond the request timeout is a Timeout naming the op.
        let mut cfg = test_config(&sim.handle.base_url(), 0);
        cfg.request_timeout = Duration::from_millis(200);
        let impatient = Client::with_key(&cfg, ApiKey::parse(&sim.handle.api_key()).unwrap()).unwrap();
        sim.handle.inject(maas_sim::Fault::Latency { ms: 2000, path_prefix: Some("/MAAS/api/2.0/fabrics/".into()), count: 1 });
        let e = impatient.fabrics().await.unwrap_err();
        assert!(matches!(&e, Error::Timeout { op: "fabrics", .. }), "{e:?}");
        sim.handle.clear_faults();

        // Connection refused once the sim is gone, naming the URL.
        let url = sim.handle.base_url();
        sim.handle.shutdown().await;
        let e = c.whoami().await.unwrap_err();
        assert!(matches!(&e, Error::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains(&url), "{e}");
    })
    .await;
}

async fn by_hostname_subnet(c: &Client) -> i64 {
    c.subnet(&SubnetRef::Cidr("172.16.0.0/20".into())).await.unwrap().id
}
