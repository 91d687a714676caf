//! Handler actions: one function per (handler, action) pair of the resource table.

mod machines;
mod network;
mod other;

use std::collections::BTreeMap;

use crate::server::Caller;
use crate::wire::{Params, Reply, Resp};
use crate::world::World;

/// What an action sees of its request.
pub(crate) struct Ctx<'a> {
    pub caller: &'a Caller,
    pub params: &'a Params,
    pub path: &'a BTreeMap<&'static str, String>,
    #[allow(dead_code)]
    pub host: &'a str,
}

impl Ctx<'_> {
    pub fn user(&self) -> &str {
        self.caller.username.as_deref().unwrap_or("")
    }

    pub fn path(&self, name: &str) -> &str {
        self.path.get(name).map(String::as_str).unwrap_or("")
    }

    /// 403 `This method is reserved for admin users.` for non-admins.
    pub fn admin(&self) -> Result<(), Resp> {
        if self.caller.admin { Ok(()) } else { Err(Resp::text(403, "This method is reserved for admin users.")) }
    }
}

/// A 404 in MAAS's words: `No Machine matches the given query.`
pub(crate) fn not_found(model: &str) -> Resp {
    Resp::text(404, format!("No {model} matches the given query."))
}

pub(crate) fn dispatch(w: &mut World, handler: &str, action: &str, c: &Ctx) -> Reply {
    match handler {
        "MachinesHandler"
        | "AnonMachinesHandler"
        | "MachineHandler"
        | "NodesHandler"
        | "AnonNodesHandler"
        | "NodeHandler"
        | "NodeScriptResultsHandler"
        | "NodeScriptResultHandler"
        | "NodeResultsHandler"
        | "TagHandler" => machines::dispatch(w, handler, action, c),
        "SubnetsHandler"
        | "SubnetHandler"
        | "FabricsHandler"
        | "FabricHandler"
        | "VlansHandler"
        | "VlanHandler"
        | "IPRangesHandler"
        | "IPRangeHandler"
        | "RackControllersHandler"
        | "RackControllerHandler"
        | "DevicesHandler"
        | "DeviceHandler" => network::dispatch(w, handler, action, c),
        _ => other::dispatch(w, handler, action, c),
    }
}

/// The answer for exports the emulator lists (so describe is complete) but does not implement.
pub(crate) fn unsupported(handler: &str, action: &str) -> Reply {
    Err(Resp::text(501, format!("maas-sim does not implement {handler}.{action}; use a real MAAS for it.")))
}
