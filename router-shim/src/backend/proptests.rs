//! Property tests for the backends' readers: hostile router answers never panic, and a forward written the
//! way a backend writes it reads back as the same forward.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{linux, openwrt, routeros};
use crate::model::{PortForward, Protocol};

fn arb_forward() -> impl Strategy<Value = PortForward> {
    ("[a-z][a-z0-9-]{0,20}", any::<bool>(), 1u16.., any::<u32>(), 1u16..).prop_map(|(name, udp, port, ip, to)| {
        PortForward {
            name,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            external_port: port,
            target: SocketAddrV4::new(Ipv4Addr::from(ip), to),
            protected: false,
        }
    })
}

/// JSON values of any shape, biased towards the keys the readers look up.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("nftables".to_string()),
        Just("rule".to_string()),
        Just("chain".to_string()),
        Just("comment".to_string()),
        Just("expr".to_string()),
        Just("match".to_string()),
        Just("dnat".to_string()),
        Just("values".to_string()),
        Just("result".to_string()),
        Just("src_ip".to_string()),
        Just("dst-port".to_string()),
        "[a-z_.-]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("metalfleet:fwd:x".to_string()),
            Just("metalfleet:mgmt:10.0.0.0/8".to_string()),
            Just("metalfleet:mgmt-drop".to_string()),
            Just("tcp".to_string()),
            Just("1.2.3.4".to_string()),
            "\\PC{0,12}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_any_reader(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = linux::fuzzing::read_nft_json(&bytes);
        let _ = openwrt::fuzzing::read_ubus_reply(&bytes);
        let _ = routeros::fuzzing::read_rest_reply(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = linux::fuzzing::dnsmasq_ranges(&text);
    }

    #[test]
    fn arbitrary_json_never_panics_any_reader(value in arb_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        prop_assert!(linux::fuzzing::read_nft_json(&bytes).is_some());
        prop_assert!(openwrt::fuzzing::read_ubus_reply(&bytes).is_some());
        prop_assert!(routeros::fuzzing::read_rest_reply(&bytes).is_some());
        let wrapped = json!({"nftables": [value.clone(), {"rule": value.clone()}]});
        let _ = linux::fuzzing::read_nft_json(&serde_json::to_vec(&wrapped).unwrap());
        let wrapped = json!({"result": [0, {"values": {"mf_x": value.clone()}}]});
        let _ = openwrt::fuzzing::read_ubus_reply(&serde_json::to_vec(&wrapped).unwrap());
        let _ = routeros::fuzzing::read_rest_reply(&serde_json::to_vec(&json!([value])).unwrap());
    }

    #[test]
    fn openwrt_redirect_reads_back_as_written(forward in arb_forward()) {
        // The values `add_forward` stages, as `uci get` answers them (every option a string).
        let values = json!({
            "name": forward.name,
            "target": "DNAT",
            "src": "wan",
            "proto": forward.protocol.as_str(),
            "src_dport": forward.external_port.to_string(),
            "dest": "lan",
            "dest_ip": forward.target.ip().to_string(),
            "dest_port": forward.target.port().to_string(),
        });
        prop_assert_eq!(openwrt::fuzzing::parse_redirect(&values), Some(forward));
    }

    #[test]
    fn routeros_nat_rule_reads_back_as_written(forward in arb_forward(), id in "\\*[0-9A-F]{1,4}") {
        // The body `add_forward` sends, plus what RouterOS adds to the item it lists.
        let item = json!({
            ".id": id,
            "chain": "dstnat",
            "action": "dst-nat",
            "protocol": forward.protocol.as_str(),
            "in-interface": "ether1",
            "dst-port": forward.external_port.to_string(),
            "to-addresses": forward.target.ip().to_string(),
            "to-ports": forward.target.port().to_string(),
            "comment": format!("metalfleet:fwd:{}", forward.name),
            "disabled": "false",
        });
        prop_assert_eq!(routeros::fuzzing::parse_nat(&item), Some(forward));
    }

    #[test]
    fn nft_forward_reads_back_from_its_json(forward in arb_forward()) {
        let rule = json!({"rule": {"family": "ip", "table": "metalfleet", "chain": "prerouting",
            "comment": format!("metalfleet:fwd:{}", forward.name), "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan0"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": forward.protocol.as_str(), "field": "dport"}},
                "right": forward.external_port}},
            {"dnat": {"addr": forward.target.ip().to_string(), "port": forward.target.port()}}]}});
        let bytes = serde_json::to_vec(&json!({"nftables": [{"metainfo": {}}, rule]})).unwrap();
        let read = linux::fuzzing::read_nft_json(&bytes).unwrap();
        prop_assert_eq!(read.table, Ok((vec![forward], None)));
    }

    #[test]
    fn dnsmasq_switch_off_leaves_no_active_range_and_keeps_the_pool(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("dhcp-range=172.16.0.100,172.16.0.200,12h".to_string()),
                Just("  dhcp-range=10.0.0.1,10.0.0.9".to_string()),
                Just("dhcp-range=lan,192.168.1.2,192.168.1.50,255.255.255.0,1h".to_string()),
                Just("#dhcp-range=1.1.1.1,1.1.1.2".to_string()),
                "[a-z-]{1,10}=[a-z0-9.,]{0,20}",
                "\\PC{0,20}",
            ],
            0..8,
        ),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        prop_assume!(lines.iter().all(|l| !l.contains("#metalfleet-dhcp-off#")));
        let mut text = lines.join(if crlf { "\r\n" } else { "\n" });
        if final_newline {
            text.push('\n');
        }
        let (active, pool) = linux::fuzzing::dnsmasq_ranges(&text);
        let off = linux::fuzzing::dhcp_off(&text);
        prop_assert_eq!(linux::fuzzing::dnsmasq_ranges(&off), (false, pool.clone()));
        prop_assert_eq!(linux::fuzzing::dhcp_off(&off), off.clone(), "switching off twice changes nothing");
        prop_assert_eq!(linux::fuzzing::dnsmasq_ranges(&linux::fuzzing::dhcp_on(&off)), (active, pool));
    }
}
