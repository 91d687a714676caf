//! The reference lab's MAAS steps against maas-sim, from a fresh MAAS to server2 deployed and released.

use std::path::Path;
use std::time::{Duration, Instant};

use maas_client::{self as maas, NodeStatus, SubnetRef};

use super::deadline;
use super::sim::{start, wait_status};

const USER_DATA: &[u8] = b"#cloud-config\nruncmd:\n  - [sh, -c, 'curl -fsS http://172.16.0.3:7443/agent | sh']\n";

/// Waits until the hook log has a line starting with `prefix`, and returns that line.
async fn wait_hook(log: &Path, prefix: &str) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return line.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "hook never ran `{prefix}`; log: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reference_lab_from_zero() {
    deadline(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.log");
        let hook = format!(
            "echo \"$MAAS_SIM_EVENT $MAAS_SIM_HOSTNAME $MAAS_SIM_DISTRO_SERIES $MAAS_SIM_USER_DATA\" >> '{}'",
            log.display()
        );
        let sim = start(false, Some(hook.into())).await;
        let c = &sim.client;
        assert!(c.machines(&maas::MachineFilter::default()).await.unwrap().is_empty(), "a fresh MAAS has no machines");

        // DNS forwarder.
        c.set_upstream_dns(&["8.8.8.8".into()]).await.unwrap();
        assert_eq!(c.upstream_dns().await.unwrap(), ["8.8.8.8"]);

        // Images: jammy is selected on a fresh MAAS; add focal; import until both are synced.
        let source = c.boot_sources().await.unwrap().remove(0);
        let selections = c.boot_source_selections(source.id).await.unwrap();
        for release in ["jammy", "focal"] {
            if !selections.iter().any(|s| s.release == release) {
                let new = maas::NewBootSourceSelection {
                    os: "ubuntu".into(),
                    release: release.into(),
                    arches: vec!["amd64".into()],
                    subarches: vec![],
                    labels: vec![],
                };
                c.create_boot_source_selection(source.id, &new).await.unwrap();
            }
        }
        c.import_boot_resources().await.unwrap();
        let started = Instant::now();
        loop {
            let resources = c.boot_resources(Some("synced")).await.unwrap();
            let mut synced = 0;
            for name in ["ubuntu/jammy", "ubuntu/focal"] {
                if let Some(r) = resources.iter().find(|r| r.name == name)
                    && c.boot_resource(r.id).await.unwrap().is_synced()
                {
                    synced += 1;
                }
            }
            if synced == 2 && !c.is_importing().await.unwrap() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "images never synced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // SSH key.
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF0fkY1cWn0b8s2lT2JmF0Qd3mN6xq6w7u2R3n5p0a9Z lab@main";
        c.create_ssh_key(key).await.unwrap();

        // The dynamic range and DHCP on the untagged VLAN with the rack as primary.
        let subnet = c.subnet(&SubnetRef::Cidr("172.16.0.0/20".into())).await.unwrap();
        let range = maas::NewIpRange {
            range_type: maas::IpRangeType::Dynamic,
            start_ip: "172.16.11.1".into(),
            end_ip: "172.16.14.255".into(),
            subnet: Some(subnet.id),
            comment: Some("metalfleet lab pool".into()),
        };
        c.create_ip_range(&range).await.unwrap();
        let vlan = subnet.vlan.clone().expect("the subnet embeds its VLAN");
        let rack = c.rack_controllers().await.unwrap().into_iter().find(|r| r.is_on_vlan(vlan.id)).expect("a rack");
        let on =
            maas::VlanUpdate { dhcp_on: Some(true), primary_rack: Some(rack.system_id.clone()), ..Default::default() };
        c.update_vlan(vlan.fabric_id, vlan.vid, &on).await.unwrap();
        let vlan = c.vlan(vlan.fabric_id, vlan.vid).await.unwrap();
        assert!(vlan.dhcp_on);
        assert_eq!(vlan.primary_rack.as_deref(), Some(rack.system_id.as_str()));

        // Four machines, created with their AMT power settings; an admin's create commissions at once.
        let mut ids = Vec::new();
        for n in 1..=4 {
            let new = maas::NewMachine {
                architecture: "amd64/generic".into(),
                mac_addresses: vec![format!("52:54:00:00:00:0{n}")],
                hostname: Some(format!("server{n}")),
                power_type: Some("amt".into()),
                power_parameters: [
                    ("power_address".to_owned(), format!("172.16.15.{n}")),
                    ("power_pass".to_owned(), "amt-password".to_owned()),
                ]
                .into(),
                ..Default::default()
            };
            let m = c.create_machine(&new).await.unwrap();
            assert_eq!(m.status, NodeStatus::Commissioning, "server{n}");
            ids.push(m.system_id);
        }
        let expected_gib = [12u64, 16, 32, 32];
        for (id, gib) in ids.iter().zip(expected_gib) {
            let m = wait_status(c, id, NodeStatus::Ready).await;
            assert_eq!(m.hardware().memory_bytes, gib << 30, "{} specs discovered by commissioning", m.hostname);
            assert_eq!(m.power_type, "amt");
        }
        let ready = maas::MachineFilter { statuses: vec![NodeStatus::Ready], ..Default::default() };
        assert_eq!(c.machines(&ready).await.unwrap().len(), 4);

        // server2: allocate, deploy with user data, deployed; the hook ran for the deploy.
        let server2 =
            c.allocate(&maas::AllocateRequest { name: Some("server2".into()), ..Default::default() }).await.unwrap();
        let options = maas::DeployOptions {
            distro_series: Some("jammy".into()),
            user_data: Some(USER_DATA.to_vec()),
            ..Default::default()
        };
        c.deploy(&server2.system_id, &options).await.unwrap();
        let deployed = wait_status(c, &server2.system_id, NodeStatus::Deployed).await;
        assert_eq!((deployed.osystem.as_str(), deployed.distro_series.as_str()), ("ubuntu", "jammy"));
        let line = wait_hook(&log, "deployed server2").await;
        let user_data_path = line.split(' ').nth(3).expect("the hook got the user data path");
        assert_eq!(std::fs::read(user_data_path).unwrap(), USER_DATA, "MAAS decoded the base64 user data");
        assert!(line.contains(" jammy "), "{line}");

        // Release; the hook ran for the release.
        c.release(&server2.system_id, &maas::ReleaseOptions::default()).await.unwrap();
        let released = wait_status(c, &server2.system_id, NodeStatus::Ready).await;
        assert_eq!(released.owner, None);
        wait_hook(&log, "released server2").await;

        sim.handle.shutdown().await;
    })
    .await;
}
