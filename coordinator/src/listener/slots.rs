//! Connection slots: the cap on concurrent connections, the cap per source address, and the
//! operators' reserve, as pure bookkeeping (no I/O) so the rules are unit-tested on their own.
//!
//! A connection takes a slot when it is accepted and gives it back when it is dropped. Until it
//! has finished the TLS handshake and sent the HTTP/2 preface it is *pending*: pending slots count
//! against the caps (so a flood of half-open handshakes cannot hold more than the cap). When the
//! pool is full, a newcomer *evicts* a pending connection, which is closed:
//! - fair share first: the oldest pending connection of the address with the most pending ones,
//!   when that address holds at least two more than the newcomer's. A flood comes from a few
//!   addresses holding many slots each; an operator or an agent holds one or two, so it gets in at
//!   once, even while the flood's connections are all young.
//! - then age: the oldest pending connection, once it has waited `evict_after`. A legitimate
//!   client is past TLS and the preface within milliseconds, so this catches a flood spread over
//!   as many addresses as there are slots.
//!
//! Established connections are never evicted. An evicted connection closes when its task next
//! runs; until then it still holds a file descriptor, so at most [`Caps::evicting_max`] evictions
//! may be in flight, and file descriptors stay under `max_connections + operator_reserved +
//! evicting_max`.
//!
//! Two pools: the general pool (`limits.max_connections`) and the operators' reserve
//! (`limits.operator_reserved`). A connection enters the reserve only when the general pool is
//! full of established connections; after its handshake it stays only if it presented an operator
//! certificate. An operator connection admitted into the general pool moves to the reserve when
//! the reserve has room, leaving the general slot to agents.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The caps, from `[limits]` (after fitting them to the fd limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_connections: usize,
    pub per_ip: usize,
    pub operator_reserved: usize,
    /// A pending connection younger than this is never evicted.
    pub evict_after: Duration,
}

/// Why a connection was not admitted, or not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot, general and reserved, holds an established connection (or one too young to evict).
    Full,
    /// The source address holds `max_connections_per_ip` connections already.
    PerIp,
    /// The connection got a reserved slot but presented no operator certificate.
    ReservedForOperators,
    /// A newer connection took this slot while this one was still pending.
    Evicted,
}

/// Which pool a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    General,
    Reserve,
}

/// The shared bookkeeping; clone the `Arc` into every connection.
#[derive(Debug)]
pub struct Slots {
    caps: Caps,
    state: Mutex<State>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    ip: IpAddr,
    pool: Pool,
    /// Cancelled when a newer connection evicts this one while it is pending.
    evicted: CancellationToken,
}

/// A newly admitted slot, and the pending connection it displaced (already told to close).
#[derive(Debug)]
pub struct Admission {
    pub slot: Slot,
    pub evicted: bool,
}

/// How many slots are held, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub general_pending: usize,
    pub general_established: usize,
    pub reserve_pending: usize,
    pub reserve_established: usize,
    pub addresses: usize,
}

#[derive(Debug, Default)]
struct State {
    general: PoolState,
    reserve: PoolState,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Evicted slots whose connection has not closed yet.
    evicting: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    established: usize,
    /// Pending slots by id; ids grow, so the first entry is the oldest.
    pending: BTreeMap<u64, Pending>,
    /// Pending slots by address, oldest first.
    by_ip: HashMap<IpAddr, BTreeSet<u64>>,
    /// (pending count, address), so the address with the most pending slots is the last entry.
    ranking: BTreeSet<(usize, IpAddr)>,
}

#[derive(Debug)]
struct Pending {
    at: Instant,
    ip: IpAddr,
    evict: CancellationToken,
}

impl Caps {
    /// Evictions in flight at most: a quarter of the general cap (at least 16).
    pub fn evicting_max(&self) -> usize {
        (self.max_connections / 4).max(16)
    }
}

impl Slots {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Slots { caps, state: Mutex::new(State::default()) })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Takes a pending slot for a connection from `ip` accepted at `now`: a free general slot, else
    /// the general slot of the oldest evictable pending connection, else (when `reserve` is allowed,
    /// i.e. operators can be told apart) a reserved slot the same way.
    ///
    /// # Errors
    /// [`Refusal::PerIp`] or [`Refusal::Full`]; the caller closes the connection at once.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, reserve: bool, now: Instant) -> Result<Admission, Refusal> {
        let ip = ip.to_canonical();
        let mut state = self.lock();
        let held = state.per_ip.get(&ip).copied().unwrap_or(0);
        if held >= self.caps.per_ip {
            return Err(Refusal::PerIp);
        }
        let evict_before = now.checked_sub(self.caps.evict_after);
        let may_evict = state.evicting < self.caps.evicting_max();
        let (pool, evicted) = if state.general.used() < self.caps.max_connections {
            (Pool::General, None)
        } else if let Some(token) = may_evict.then(|| state.general.evict(held, evict_before)).flatten() {
            (Pool::General, Some(token))
        } else if reserve && state.reserve.used() < self.caps.operator_reserved {
            (Pool::Reserve, None)
        } else if let Some(token) = (reserve && may_evict).then(|| state.reserve.evict(held, evict_before)).flatten() {
            (Pool::Reserve, Some(token))
        } else {
            return Err(Refusal::Full);
        };
        state.evicting += usize::from(evicted.is_some());
        let id = state.next_id;
        state.next_id += 1;
        let token = CancellationToken::new();
        state.pool(pool).insert(id, Pending { at: now, ip, evict: token.clone() });
        *state.per_ip.entry(ip).or_insert(0) += 1;
        drop(state);
        let evicted = evicted.map(|token| token.cancel()).is_some();
        Ok(Admission { slot: Slot { slots: self.clone(), id, ip, pool, evicted: token }, evicted })
    }

    /// What is held now.
    pub fn usage(&self) -> Usage {
        let state = self.lock();
        Usage {
            general_pending: state.general.pending.len(),
            general_established: state.general.established,
            reserve_pending: state.reserve.pending.len(),
            reserve_established: state.reserve.established,
            addresses: state.per_ip.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters, consistent after every statement; a panic elsewhere does not corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slot {
    /// Cancelled when a newer connection evicted this pending one; the connection then closes.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// After the TLS handshake: keeps a reserved slot only for an operator, and moves an operator
    /// from the general pool into the reserve when it has room. The slot stays pending.
    ///
    /// # Errors
    /// [`Refusal::ReservedForOperators`], or [`Refusal::Evicted`] when it was evicted meanwhile.
    pub fn classify(&mut self, operator: bool) -> Result<(), Refusal> {
        let caps = self.slots.caps;
        let mut state = self.slots.lock();
        if !state.pool(self.pool).pending.contains_key(&self.id) {
            return Err(Refusal::Evicted);
        }
        match (self.pool, operator) {
            (Pool::Reserve, false) => Err(Refusal::ReservedForOperators),
            (Pool::General, true) if state.reserve.used() < caps.operator_reserved => {
                let entry = state.general.remove(self.id).expect("checked above");
                state.reserve.insert(self.id, entry);
                self.pool = Pool::Reserve;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The connection is past TLS and the HTTP/2 preface: it can no longer be evicted.
    ///
    /// # Errors
    /// [`Refusal::Evicted`] when it was evicted before getting here.
    pub fn establish(&mut self) -> Result<(), Refusal> {
        let mut state = self.slots.lock();
        let pool = state.pool(self.pool);
        if pool.remove(self.id).is_none() {
            return Err(Refusal::Evicted);
        }
        pool.established += 1;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        let pool = state.pool(self.pool);
        // An evicted slot's place was taken by the newcomer already; an established one is counted.
        if pool.remove(self.id).is_none() {
            if self.evicted.is_cancelled() {
                state.evicting -= 1;
            } else {
                pool.established -= 1;
            }
        }
        if let Some(count) = state.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
    }
}

impl State {
    fn pool(&mut self, pool: Pool) -> &mut PoolState {
        match pool {
            Pool::General => &mut self.general,
            Pool::Reserve => &mut self.reserve,
        }
    }
}

impl PoolState {
    fn used(&self) -> usize {
        self.established + self.pending.len()
    }

    fn insert(&mut self, id: u64, pending: Pending) {
        let ip = pending.ip;
        self.pending.insert(id, pending);
        let ids = self.by_ip.entry(ip).or_default();
        self.ranking.remove(&(ids.len(), ip));
        ids.insert(id);
        self.ranking.insert((ids.len(), ip));
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        let ip = pending.ip;
        let ids = self.by_ip.get_mut(&ip).expect("every pending slot is indexed by address");
        self.ranking.remove(&(ids.len(), ip));
        ids.remove(&id);
        if ids.is_empty() {
            self.by_ip.remove(&ip);
        } else {
            self.ranking.insert((ids.len(), ip));
        }
        Some(pending)
    }

    /// Evicts for a newcomer whose address holds `held` slots (see the module doc): the oldest
    /// pending slot of the address with the most, if it holds two more than `held`; else the
    /// oldest pending slot accepted before `before`. Returns its token.
    fn evict(&mut self, held: usize, before: Option<Instant>) -> Option<CancellationToken> {
        let fair = self
            .ranking
            .last()
            .filter(|(count, _)| *count > held + 1)
            .and_then(|(_, ip)| self.by_ip.get(ip)?.first().copied());
        let aged = || {
            let before = before?;
            let (id, pending) = self.pending.first_key_value()?;
            (pending.at <= before).then_some(*id)
        };
        let id = fair.or_else(aged)?;
        self.remove(id).map(|pending| pending.evict)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn slots(max_connections: usize, per_ip: usize, operator_reserved: usize) -> Arc<Slots> {
        Slots::new(Caps { max_connections, per_ip, operator_reserved, evict_after: SECOND })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn established(slots: &Arc<Slots>, from: IpAddr, now: Instant) -> Slot {
        let mut slot = slots.admit(from, true, now).unwrap().slot;
        slot.establish().unwrap();
        slot
    }

    #[test]
    fn the_cap_counts_pending_and_established_and_dropping_gives_slots_back() {
        let slots = slots(2, 10, 0);
        let t0 = Instant::now();
        let a = established(&slots, ip(2), t0);
        let b = slots.admit(ip(3), true, t0).unwrap().slot;
        assert_eq!(slots.admit(ip(4), true, t0).unwrap_err(), Refusal::Full);
        assert_eq!(
            slots.usage(),
            Usage { general_pending: 1, general_established: 1, addresses: 2, ..Usage::default() }
        );
        drop(a);
        let c = slots.admit(ip(4), true, t0).unwrap();
        assert!(!c.evicted);
        drop((b, c));
        assert_eq!(slots.usage(), Usage::default());
    }

    #[test]
    fn each_address_holds_at_most_its_share() {
        let slots = slots(100, 2, 0);
        let t0 = Instant::now();
        let first = slots.admit(ip(2), false, t0).unwrap();
        let _second = slots.admit(ip(2), false, t0).unwrap();
        assert_eq!(slots.admit(ip(2), false, t0).unwrap_err(), Refusal::PerIp);
        // An IPv4-mapped IPv6 address is the same address.
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(slots.admit(mapped, false, t0).unwrap_err(), Refusal::PerIp);
        let _other = slots.admit(ip(3), false, t0).unwrap();
        drop(first);
        assert!(slots.admit(ip(2), false, t0).is_ok(), "a closed connection gives its address's share back");
    }

    #[test]
    fn the_oldest_pending_connection_gives_way_once_it_waited_evict_after() {
        let slots = slots(2, 10, 0);
        let t0 = Instant::now();
        let oldest = slots.admit(ip(2), false, t0).unwrap().slot;
        let younger = slots.admit(ip(3), false, t0 + SECOND / 2).unwrap().slot;
        // Both too young at t0 + 999 ms: refused, nothing evicted.
        assert_eq!(slots.admit(ip(4), false, t0 + SECOND - Duration::from_millis(1)).unwrap_err(), Refusal::Full);
        assert!(!oldest.evicted().is_cancelled());
        let newcomer = slots.admit(ip(4), false, t0 + SECOND).unwrap();
        assert!(newcomer.evicted);
        assert!(oldest.evicted().is_cancelled(), "the oldest was told to close");
        assert!(!younger.evicted().is_cancelled());
        let mut oldest = oldest;
        assert_eq!(oldest.establish().unwrap_err(), Refusal::Evicted, "an evicted connection cannot establish");
        drop(oldest);
        assert_eq!(slots.usage().general_pending, 2, "the newcomer holds the evicted slot: {:?}", slots.usage());
        assert_eq!(slots.usage().addresses, 2);
        drop((younger, newcomer));
        assert_eq!(slots.usage(), Usage::default());
    }

    #[test]
    fn an_address_holding_many_pending_slots_gives_way_at_once_to_one_holding_few() {
        let slots = slots(4, 10, 0);
        let t0 = Instant::now();
        let flood: Vec<Slot> = (0..3).map(|_| slots.admit(ip(2), false, t0).unwrap().slot).collect();
        let other = slots.admit(ip(3), false, t0).unwrap().slot;
        // All young: a newcomer from a fresh address takes the flood's oldest slot.
        let newcomer = slots.admit(ip(5), false, t0).unwrap();
        assert!(newcomer.evicted && flood[0].evicted().is_cancelled());
        assert!(!flood[1].evicted().is_cancelled() && !other.evicted().is_cancelled());
        // The flood's own address (3 held) and one holding 1 against 2 pending: no fair-share eviction.
        assert_eq!(slots.admit(ip(2), false, t0).unwrap_err(), Refusal::Full);
        assert_eq!(slots.admit(ip(3), false, t0).unwrap_err(), Refusal::Full);
        // An established connection counts for its address but cannot be evicted.
        let slots = self::slots(2, 10, 0);
        let _a = established(&slots, ip(2), t0);
        let _b = established(&slots, ip(2), t0);
        assert_eq!(slots.admit(ip(5), false, t0).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn evictions_in_flight_are_bounded_until_the_evicted_connections_close() {
        let slots = slots(16, 100, 0);
        let t0 = Instant::now();
        let flood: Vec<Slot> = (0..16).map(|i| slots.admit(ip(100 + i), false, t0).unwrap().slot).collect();
        let later = t0 + SECOND;
        let newcomers: Vec<Admission> = (0..16).map(|i| slots.admit(ip(200 + i), false, later).unwrap()).collect();
        assert!(newcomers.iter().all(|a| a.evicted) && flood.iter().all(|s| s.evicted().is_cancelled()));
        // Sixteen evicted connections still hold their descriptors: no more evictions.
        assert_eq!(slots.admit(ip(50), false, later + SECOND).unwrap_err(), Refusal::Full);
        let mut flood = flood;
        flood.pop();
        assert!(slots.admit(ip(50), false, later + SECOND).unwrap().evicted, "one closed, one more eviction");
    }

    #[test]
    fn established_connections_are_never_evicted() {
        let slots = slots(2, 10, 0);
        let t0 = Instant::now();
        let _a = established(&slots, ip(2), t0);
        let _b = established(&slots, ip(3), t0);
        assert_eq!(slots.admit(ip(4), true, t0 + 100 * SECOND).unwrap_err(), Refusal::Full);
        assert_eq!(slots.usage().general_established, 2);
    }

    #[test]
    fn the_reserve_is_for_operators_when_the_general_slots_are_established() {
        let slots = slots(2, 10, 1);
        let t0 = Instant::now();
        let _agents = (established(&slots, ip(2), t0), established(&slots, ip(3), t0));
        // Not an operator: admitted into the reserve, closed after the handshake.
        let mut stranger = slots.admit(ip(4), true, t0).unwrap().slot;
        assert_eq!(stranger.pool(), Pool::Reserve);
        assert_eq!(stranger.classify(false).unwrap_err(), Refusal::ReservedForOperators);
        drop(stranger);
        // An operator keeps it; the next one is refused while it holds it.
        let mut operator = slots.admit(ip(5), true, t0).unwrap().slot;
        operator.classify(true).unwrap();
        operator.establish().unwrap();
        assert_eq!(slots.admit(ip(6), true, t0 + 100 * SECOND).unwrap_err(), Refusal::Full);
        assert_eq!(slots.usage().reserve_established, 1);
        // A plaintext listener cannot tell operators apart and never uses the reserve.
        let plain = self::slots(2, 10, 1);
        let _full = (established(&plain, ip(2), t0), established(&plain, ip(3), t0));
        assert_eq!(plain.admit(ip(4), false, t0).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn an_operator_in_a_general_slot_moves_to_the_reserve_and_frees_it() {
        let slots = slots(2, 10, 1);
        let t0 = Instant::now();
        let mut operator = slots.admit(ip(2), true, t0).unwrap().slot;
        operator.classify(true).unwrap();
        operator.establish().unwrap();
        assert_eq!(operator.pool(), Pool::Reserve);
        let _agents = (established(&slots, ip(3), t0), established(&slots, ip(4), t0));
        assert_eq!(slots.usage().general_established, 2, "both general slots went to agents");
        // Without a reserve an operator stays in its general slot.
        let slots = self::slots(2, 10, 0);
        let mut operator = slots.admit(ip(2), true, t0).unwrap().slot;
        operator.classify(true).unwrap();
        assert_eq!(operator.pool(), Pool::General);
    }

    #[test]
    fn a_flooded_reserve_gives_way_to_a_newer_connection() {
        let slots = slots(1, 10, 1);
        let t0 = Instant::now();
        let _agent = established(&slots, ip(2), t0);
        let flood = slots.admit(ip(3), true, t0).unwrap().slot;
        assert_eq!(flood.pool(), Pool::Reserve);
        let operator = slots.admit(ip(4), true, t0 + SECOND).unwrap();
        assert!(operator.evicted && flood.evicted().is_cancelled());
        assert_eq!(operator.slot.pool(), Pool::Reserve);
    }
}
