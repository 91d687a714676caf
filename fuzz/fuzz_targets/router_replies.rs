//! The router backends' readers: nft's JSON (linux), ubus JSON-RPC answers (OpenWrt), RouterOS REST answers,
//! and the dnsmasq config reader and its switch-off/on rewrites.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router_shim::backend::{linux, openwrt, routeros};

fuzz_target!(|data: &[u8]| {
    let _ = linux::fuzzing::read_nft_json(data);
    let _ = openwrt::fuzzing::read_ubus_reply(data);
    let _ = routeros::fuzzing::read_rest_reply(data);
    let text = String::from_utf8_lossy(data);
    let (_, pool) = linux::fuzzing::dnsmasq_ranges(&text);
    let off = linux::fuzzing::dhcp_off(&text);
    let (active_after_off, pool_after_off) = linux::fuzzing::dnsmasq_ranges(&off);
    assert!(!active_after_off, "a range is still active after switching DHCP off: {off:?}");
    assert_eq!(pool_after_off, pool, "switching DHCP off lost the pool");
    let _ = linux::fuzzing::dhcp_on(&off);
});
