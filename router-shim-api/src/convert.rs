//! Model <-> wire conversions for `metalfleet.v1.RouterShim`: the router's state, forwards and remote management.
//!
//! Both directions live here, beside each other, because the client needs both (it sends forwards and reads
//! states) and the round-trip tests check each pair. What only the server sends (a change's outcome, a probe's
//! report) is converted in `router_shim::grpc::convert`, next to the shim core it reads.
//! Messages are destructured field by field so that a new proto field breaks the build here.

use std::time::SystemTime;

use proto::v1 as pb;

use crate::model::{self, InvalidInput, PortForward, Protocol, RemoteManagement, RouterState};

pub fn protocol_to_wire(protocol: Protocol) -> pb::Protocol {
    match protocol {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
    }
}

pub fn protocol_from_wire(value: i32) -> Result<Protocol, InvalidInput> {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(InvalidInput::Protocol(format!("protocol enum value {value}"))),
    }
}

pub fn forward_to_wire(forward: &PortForward) -> pb::PortForward {
    let PortForward { name, protocol, external_port, target, protected } = forward;
    pb::PortForward {
        name: name.clone(),
        protocol: protocol_to_wire(*protocol) as i32,
        external_port: u32::from(*external_port),
        target_ip: target.ip().to_string(),
        target_port: u32::from(target.port()),
        protected: *protected,
    }
}

pub fn forward_from_wire(forward: pb::PortForward) -> Result<PortForward, InvalidInput> {
    let pb::PortForward { name, protocol, external_port, target_ip, target_port, protected } = forward;
    let target = model::parse_target(&format!("{target_ip}:{target_port}"))?;
    Ok(PortForward {
        name,
        protocol: protocol_from_wire(protocol)?,
        external_port: model::validate_port(external_port)?,
        target,
        protected,
    })
}

pub fn management_to_wire(management: &RemoteManagement) -> pb::RemoteManagement {
    pb::RemoteManagement {
        enabled: management.enabled,
        allowed_from: management.allowed_from.iter().map(ToString::to_string).collect(),
    }
}

pub fn management_from_wire(enabled: bool, allowed_from: &[String]) -> Result<RemoteManagement, InvalidInput> {
    let allowed_from = allowed_from.iter().map(|c| model::parse_cidr(c)).collect::<Result<Vec<_>, _>>()?;
    Ok(RemoteManagement { enabled, allowed_from })
}

pub fn state_to_wire(state: &RouterState, read_at: SystemTime) -> pb::RouterState {
    let RouterState { backend, dhcp_enabled, dhcp_pool, forwards, remote_management } = state;
    pb::RouterState {
        backend: backend.clone(),
        dhcp_enabled: *dhcp_enabled,
        dhcp_pool: dhcp_pool.clone(),
        forwards: forwards.iter().map(forward_to_wire).collect(),
        remote_management: Some(management_to_wire(remote_management)),
        read_at: Some(read_at.into()),
    }
}

pub fn state_from_wire(state: pb::RouterState) -> Result<RouterState, InvalidInput> {
    let pb::RouterState { backend, dhcp_enabled, dhcp_pool, forwards, remote_management, read_at: _ } = state;
    let remote_management = match remote_management {
        Some(m) => management_from_wire(m.enabled, &m.allowed_from)?,
        None => RemoteManagement::default(),
    };
    Ok(RouterState {
        backend,
        dhcp_enabled,
        dhcp_pool,
        forwards: forwards.into_iter().map(forward_from_wire).collect::<Result<_, _>>()?,
        remote_management,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let state = RouterState {
            backend: "linux".into(),
            dhcp_enabled: true,
            dhcp_pool: "172.16.0.100-172.16.0.200".into(),
            forwards: vec![PortForward {
                name: "main-ssh".into(),
                protocol: Protocol::Udp,
                external_port: 2222,
                target: "172.16.0.3:22".parse().unwrap(),
                protected: true,
            }],
            remote_management: RemoteManagement { enabled: true, allowed_from: vec!["10.0.0.0/8".parse().unwrap()] },
        };
        assert_eq!(state_from_wire(state_to_wire(&state, SystemTime::now())).unwrap(), state);
    }

    #[test]
    fn wire_forward_is_checked() {
        let mut wire = forward_to_wire(&PortForward {
            name: "a".into(),
            protocol: Protocol::Tcp,
            external_port: 1,
            target: "172.16.0.3:22".parse().unwrap(),
            protected: false,
        });
        wire.external_port = 70000;
        assert_eq!(forward_from_wire(wire.clone()), Err(InvalidInput::Port(70000)));
        wire.external_port = 22;
        wire.protocol = 0;
        assert!(forward_from_wire(wire).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_forward() -> impl Strategy<Value = PortForward> {
        ("[A-Za-z0-9._-]{1,64}", any::<bool>(), 1u16.., any::<[u8; 4]>(), 1u16.., any::<bool>()).prop_map(
            |(name, udp, external_port, ip, port, protected)| PortForward {
                name,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                external_port,
                target: std::net::SocketAddrV4::new(ip.into(), port),
                protected,
            },
        )
    }

    proptest! {
        #[test]
        fn forward_round_trips(forward in arb_forward()) {
            prop_assert_eq!(forward_from_wire(forward_to_wire(&forward)).unwrap(), forward);
        }

        #[test]
        fn arbitrary_wire_forwards_never_panic(
            name in ".{0,80}", protocol in any::<i32>(), external_port in any::<u32>(),
            target_ip in ".{0,20}", target_port in any::<u32>(),
        ) {
            let wire = pb::PortForward { name, protocol, external_port, target_ip, target_port, protected: false };
            let _ = forward_from_wire(wire);
        }

        #[test]
        fn arbitrary_bytes_are_never_an_offer_by_accident(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Garbage may not panic; an offer needs the BOOTREPLY, our xid, type Offer and option 54.
            let _ = crate::probe::parse_offer(&bytes, 0x1234_5678, std::net::Ipv4Addr::LOCALHOST);
        }
    }
}
