//! The culprit as fleetctl sees it: set here, read back by the fleetctl crate (a dev-dependency only).

use fleetctl::CliError;
use fleetctl::client::ClientError;

use super::*;
use crate::maas::error::Subject;
use crate::plan::PlanError;

const MAAS_URL: &str = "http://10.0.0.5:5240/MAAS/api/2.0/";

#[test]
fn a_culprit_travels_with_the_status() {
    let status = attach(Status::unavailable("MAAS down"), Service::Maas, "http://10.0.0.1:5240/MAAS/api/2.0/");
    let culprit = fleetctl::culprit::of(&status).expect("attached");
    assert_eq!(culprit, Culprit { service: Service::Maas, address: "http://10.0.0.1:5240/MAAS/api/2.0/".into() });
    assert_eq!(fleetctl::culprit::of(&Status::unavailable("coordinator draining")), None);
    let odd = attach(Status::unavailable("x"), Service::Router, "bad\naddress");
    assert_eq!(fleetctl::culprit::of(&odd), Some(Culprit { service: Service::Router, address: String::new() }));
}

/// The coordinator's status for a MAAS failure, as fleetctl turns it into words and an exit code.
fn seen_by_fleetctl(source: crate::maas::Error) -> CliError {
    let status = crate::grpc::lab_service::status(PlanError::Maas {
        what: "upstream_dns",
        url: MAAS_URL.into(),
        source: Box::new(source),
    });
    ClientError::from_status("http://127.0.0.1:7443", status).into()
}

#[test]
fn a_maas_failure_names_maas_and_its_url_not_the_coordinator() {
    let down = seen_by_fleetctl(crate::maas::Error::Unavailable {
        op: "upstream_dns",
        machine: Subject(None),
        message: "region restarting".into(),
        retry_after: None,
    });
    assert_eq!(down.exit_code(), metalfleet_common::exit::UNAVAILABLE);
    let text = down.to_string();
    assert!(text.contains("MAAS at http://10.0.0.5:5240/MAAS/api/2.0/"), "{text}");
    assert!(!text.contains("coordinator") && !text.contains("127.0.0.1:7443"), "{text}");

    let refused = seen_by_fleetctl(crate::maas::Error::Unauthorized { op: "upstream_dns", message: "bad key".into() });
    assert_eq!(refused.exit_code(), metalfleet_common::exit::CHECK_FAILED);
    assert!(refused.to_string().contains(MAAS_URL), "{refused}");

    // The same for power and redeploy (OperationsService).
    let busy = crate::maas::Error::Unavailable {
        op: "power_on",
        machine: Subject(Some("abc123".into())),
        message: "busy".into(),
        retry_after: None,
    };
    let status = crate::grpc::operations_service::status(crate::operations::OpError::Maas(busy));
    let power: CliError = ClientError::from_status("http://127.0.0.1:7443", status).into();
    assert_eq!(power.exit_code(), metalfleet_common::exit::UNAVAILABLE);
    assert!(power.to_string().contains("MAAS") && !power.to_string().contains("coordinator"), "{power}");

    // Without a culprit, UNAVAILABLE still means the coordinator itself.
    let own: CliError =
        ClientError::from_status("http://127.0.0.1:7443", tonic::Status::unavailable("draining")).into();
    assert!(own.to_string().contains("cannot reach the coordinator at http://127.0.0.1:7443"), "{own}");
}
