//! Dr. Multicast: maps logical groups onto a bounded set of physical IP-multicast addresses.
//!
//! This module owns the *mapping decision* only — a pure, deterministic function
//! ([`assign`]) that the oracle's replicated state machine runs on every replica, so every
//! replica computes the identical mapping with no extra agreement. It also owns the mapping
//! parameters ([`McParams`]) and their validation.
//!
//! # The rule (after Isis² `ComputeMCMDMapping`, with its overlap bug fixed)
//!
//! 1. With global unicast-only mode (`VSYNC_UNICAST_ONLY`) or a cap of zero, every group uses
//!    unicast fan-out (`None`).
//! 2. Candidates: groups flagged [`McPolicy::UseIpmc`] (always), and [`McPolicy::Auto`] groups
//!    with at least two members (a one-member group sends to nobody). Groups flagged
//!    [`McPolicy::UseUnicast`] never get an address.
//! 3. Candidates are ranked: `UseIpmc` first, then by **weight = traffic × size**, descending;
//!    a group that already holds an address gets a 25% bonus ([`INCUMBENT_BONUS_DIVISOR`]) so
//!    that two groups of near-equal weight do not swap addresses on every recomputation
//!    (hysteresis); ties break on the group id.
//! 4. If the candidates fit in the cap (`VSYNC_MAXIPMCADDRS`, default 25, further limited by
//!    the size of the address range) each gets its own address.
//! 5. Otherwise they are taken in rank order and **merged**: a group joins the existing
//!    cluster whose receiver set (the union of its groups' members) it most resembles, if the
//!    Jaccard similarity |A ∩ B| / |A ∪ B| is at least [`MERGE_SIMILARITY`] (½). The ½ bound
//!    caps the waste: at least half of everyone subscribed to the shared address wants any
//!    given packet, so receivers filter (by group id, which every datagram carries) at most
//!    as much as they keep. A group similar to no cluster opens a new cluster while addresses
//!    remain; **all remaining groups use unicast fan-out**. Isis² compared a view against
//!    itself and so merged groups that did not overlap at all; this computes the real overlap.
//! 6. **Stability**: each cluster keeps, if it can, an address one of its groups held before
//!    (best-ranked group first); clusters that need a new address get the lowest address in
//!    the range that was not in use in the previous mapping, so an address freed this round
//!    is not immediately handed to a different set of receivers while the network still routes
//!    the old traffic (Isis² warns that during a switch-over up to twice the cap is in use).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use vsync_dataplane::{GroupId, MemberId};

/// Minimum Jaccard similarity between a group's members and a cluster's receivers for the
/// group to share the cluster's address (numerator / denominator: ½).
pub const MERGE_SIMILARITY: (u64, u64) = (1, 2);

/// An incumbent (a group that held an address in the previous mapping) ranks as if its weight
/// were `weight + weight / INCUMBENT_BONUS_DIVISOR` (i.e. +25%).
pub const INCUMBENT_BONUS_DIVISOR: u64 = 4;

/// Default cap on physical IP-multicast addresses (`VSYNC_MAXIPMCADDRS`), as in Isis².
pub const DEFAULT_MAX_IPMC_ADDRS: u32 = 25;

/// Largest accepted `VSYNC_MAXIPMCADDRS`: beyond a few thousand, switch and NIC filters are
/// exhausted and IP multicast degenerates into broadcast — the failure Dr. Multicast avoids.
pub const MAX_IPMC_ADDRS_LIMIT: u32 = 4096;

/// A group's IP-multicast preference (Isis² `UseUnicast()` / `UseIPMC()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum McPolicy {
    /// Let Dr. Multicast decide by traffic × size.
    #[default]
    Auto,
    /// Never give this group an IP-multicast address (point-to-point UDP fan-out).
    UseUnicast,
    /// Rank this group ahead of every `Auto` group.
    UseIpmc,
}

/// The parameters of the mapping: the physical address range, the cap and the global mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct McParams {
    /// Lowest physical address that may be assigned (`VSYNC_MCRANGE_LOW`).
    pub range_low: Ipv4Addr,
    /// Highest physical address that may be assigned, inclusive (`VSYNC_MCRANGE_HIGH`).
    pub range_high: Ipv4Addr,
    /// Most physical addresses in use at once (`VSYNC_MAXIPMCADDRS`).
    pub max_addrs: u32,
    /// No IP multicast at all (`VSYNC_UNICAST_ONLY`).
    pub unicast_only: bool,
}

impl Default for McParams {
    /// The organisation-local scope 239.255.0.0/16 (RFC 2365), 25 addresses, IPMC allowed.
    fn default() -> Self {
        McParams {
            range_low: Ipv4Addr::new(239, 255, 0, 1),
            range_high: Ipv4Addr::new(239, 255, 255, 254),
            max_addrs: DEFAULT_MAX_IPMC_ADDRS,
            unicast_only: false,
        }
    }
}

/// Why [`McParams`] are unusable; names the variables involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McParamsError {
    /// An end of the range is not an IPv4 multicast address usable for data.
    NotMulticast {
        /// `VSYNC_MCRANGE_LOW` or `VSYNC_MCRANGE_HIGH`.
        variable: &'static str,
        /// The offending address.
        addr: Ipv4Addr,
    },
    /// The low end is above the high end.
    Inverted {
        /// The low end.
        low: Ipv4Addr,
        /// The high end.
        high: Ipv4Addr,
    },
    /// The cap is above [`MAX_IPMC_ADDRS_LIMIT`].
    TooManyAddrs {
        /// The requested cap.
        max_addrs: u32,
    },
}

impl fmt::Display for McParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McParamsError::NotMulticast { variable, addr } => write!(
                f,
                "{variable}={addr}: expected an IPv4 multicast address in 224.0.1.0..=239.255.255.255 \
                 (224.0.0.0/24 is reserved for link-local control traffic)"
            ),
            McParamsError::Inverted { low, high } => write!(
                f,
                "VSYNC_MCRANGE_LOW={low} is above VSYNC_MCRANGE_HIGH={high}: expected LOW <= HIGH"
            ),
            McParamsError::TooManyAddrs { max_addrs } => write!(
                f,
                "VSYNC_MAXIPMCADDRS={max_addrs}: expected an integer in 0..={MAX_IPMC_ADDRS_LIMIT}"
            ),
        }
    }
}

impl std::error::Error for McParamsError {}

/// True for addresses usable as group data addresses: 224.0.1.0 ..= 239.255.255.255.
pub fn is_usable_multicast(addr: Ipv4Addr) -> bool {
    addr.is_multicast()
        && !(addr.octets()[0] == 224 && addr.octets()[1] == 0 && addr.octets()[2] == 0)
}

impl McParams {
    /// Checks the range and the cap.
    pub fn validate(&self) -> Result<(), McParamsError> {
        for (variable, addr) in [
            ("VSYNC_MCRANGE_LOW", self.range_low),
            ("VSYNC_MCRANGE_HIGH", self.range_high),
        ] {
            if !is_usable_multicast(addr) {
                return Err(McParamsError::NotMulticast { variable, addr });
            }
        }
        if u32::from(self.range_low) > u32::from(self.range_high) {
            return Err(McParamsError::Inverted {
                low: self.range_low,
                high: self.range_high,
            });
        }
        if self.max_addrs > MAX_IPMC_ADDRS_LIMIT {
            return Err(McParamsError::TooManyAddrs {
                max_addrs: self.max_addrs,
            });
        }
        Ok(())
    }

    /// How many addresses can be in use: the cap, limited by the range size (0 if invalid or
    /// unicast-only).
    pub fn capacity(&self) -> usize {
        if self.unicast_only || self.validate().is_err() {
            return 0;
        }
        let span = u64::from(u32::from(self.range_high)) - u64::from(u32::from(self.range_low)) + 1;
        span.min(u64::from(self.max_addrs)) as usize
    }
}

/// One group as Dr. Multicast sees it.
#[derive(Clone, Copy, Debug)]
pub struct GroupLoad<'a> {
    /// The logical group.
    pub group: GroupId,
    /// Its current members (any order).
    pub members: &'a [MemberId],
    /// Its traffic rate (messages per second, as aggregated by the oracle).
    pub traffic: u64,
    /// Its IP-multicast preference.
    pub policy: McPolicy,
}

/// The mapping for every input group: `Some(address)` to use IP multicast on that physical
/// address, `None` for unicast fan-out. Deterministic in its inputs.
///
/// `previous` is the mapping currently in force; the result keeps addresses where it can.
pub fn assign(
    groups: &[GroupLoad<'_>],
    params: &McParams,
    previous: &BTreeMap<GroupId, Ipv4Addr>,
) -> BTreeMap<GroupId, Option<Ipv4Addr>> {
    let mut out: BTreeMap<GroupId, Option<Ipv4Addr>> =
        groups.iter().map(|g| (g.group, None)).collect();
    let capacity = params.capacity();
    if capacity == 0 {
        return out;
    }

    // Rank the candidates.
    let mut ranked: Vec<(u8, u64, GroupId, usize)> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| match g.policy {
            McPolicy::UseUnicast => false,
            McPolicy::UseIpmc => true,
            McPolicy::Auto => g.members.len() >= 2,
        })
        .map(|(i, g)| {
            let class = u8::from(g.policy != McPolicy::UseIpmc);
            let mut weight = g.traffic.saturating_mul(g.members.len() as u64);
            if previous.contains_key(&g.group) {
                weight = weight.saturating_add(weight / INCUMBENT_BONUS_DIVISOR);
            }
            (class, weight, g.group, i)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    // Duplicate group ids in the input: keep the first (best-ranked) entry only.
    let mut seen = BTreeSet::new();
    ranked.retain(|r| seen.insert(r.2));

    // Build clusters: each cluster is a list of groups (rank order) and its receivers.
    struct Cluster {
        groups: Vec<GroupId>,
        receivers: Vec<MemberId>, // sorted, deduplicated
    }
    let mut clusters: Vec<Cluster> = Vec::new();
    let merge = ranked.len() > capacity;
    for &(_, _, group, i) in &ranked {
        let mut members = groups[i].members.to_vec();
        members.sort_unstable();
        members.dedup();
        if merge {
            let mut best: Option<(usize, u64, u64)> = None; // (cluster, inter, union)
            for (c, cl) in clusters.iter().enumerate() {
                let (inter, union) = overlap(&members, &cl.receivers);
                let similar = union > 0
                    && inter.saturating_mul(MERGE_SIMILARITY.1)
                        >= union.saturating_mul(MERGE_SIMILARITY.0);
                let better = match best {
                    None => true,
                    // inter/union > b_inter/b_union, compared without division.
                    Some((_, bi, bu)) => {
                        u128::from(inter) * u128::from(bu) > u128::from(bi) * u128::from(union)
                    }
                };
                if similar && better {
                    best = Some((c, inter, union));
                }
            }
            if let Some((c, _, _)) = best {
                let cl = &mut clusters[c];
                cl.groups.push(group);
                cl.receivers = union_sorted(&cl.receivers, &members);
                continue;
            }
        }
        if clusters.len() < capacity {
            clusters.push(Cluster {
                groups: vec![group],
                receivers: members,
            });
        }
        // else: unicast fan-out (already None).
    }

    // Allocate physical addresses, keeping previous ones where possible.
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut chosen: Vec<Option<u32>> = vec![None; clusters.len()];
    for (c, cl) in clusters.iter().enumerate() {
        for g in &cl.groups {
            if let Some(addr) = previous.get(g) {
                let a = u32::from(*addr);
                let in_range =
                    (u32::from(params.range_low)..=u32::from(params.range_high)).contains(&a);
                if in_range && !taken.contains(&a) {
                    taken.insert(a);
                    chosen[c] = Some(a);
                    break;
                }
            }
        }
    }
    let previously_used: BTreeSet<u32> = previous.values().map(|a| u32::from(*a)).collect();
    let (low, high) = (u32::from(params.range_low), u32::from(params.range_high));
    for slot in chosen.iter_mut().filter(|s| s.is_none()) {
        // Fresh first (not used before, not taken now); then anything not taken now. At most
        // capacity + |previous| addresses are skipped, so the scans are short.
        let fresh = (low..=high).find(|a| !taken.contains(a) && !previously_used.contains(a));
        let any = || (low..=high).find(|a| !taken.contains(a));
        if let Some(a) = fresh.or_else(any) {
            taken.insert(a);
            *slot = Some(a);
        }
    }
    for (cl, addr) in clusters.iter().zip(chosen) {
        for g in &cl.groups {
            out.insert(*g, addr.map(Ipv4Addr::from));
        }
    }
    out
}

/// |A ∩ B| and |A ∪ B| of two sorted, deduplicated slices.
fn overlap(a: &[MemberId], b: &[MemberId]) -> (u64, u64) {
    let (mut i, mut j, mut inter) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (inter, (a.len() + b.len()) as u64 - inter)
}

/// The sorted union of two sorted, deduplicated slices.
fn union_sorted(a: &[MemberId], b: &[MemberId]) -> Vec<MemberId> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(range: std::ops::Range<u32>) -> Vec<MemberId> {
        range.map(|p| MemberId::new(p, 1)).collect()
    }

    fn params(max: u32) -> McParams {
        McParams {
            max_addrs: max,
            ..McParams::default()
        }
    }

    #[test]
    fn few_groups_each_get_an_address() {
        let m = members(0..5);
        let gs: Vec<GroupLoad> = (0..3)
            .map(|i| GroupLoad {
                group: GroupId(i),
                members: &m,
                traffic: 10,
                policy: McPolicy::Auto,
            })
            .collect();
        let out = assign(&gs, &params(25), &BTreeMap::new());
        let addrs: BTreeSet<_> = out.values().map(|a| a.unwrap()).collect();
        assert_eq!(
            addrs.len(),
            3,
            "identical members but room for all: no merging"
        );
    }

    #[test]
    fn unicast_only_and_use_unicast_get_none() {
        let m = members(0..5);
        let gs = [
            GroupLoad {
                group: GroupId(1),
                members: &m,
                traffic: 10,
                policy: McPolicy::Auto,
            },
            GroupLoad {
                group: GroupId(2),
                members: &m,
                traffic: 10,
                policy: McPolicy::UseUnicast,
            },
        ];
        let out = assign(&gs, &params(25), &BTreeMap::new());
        assert!(out[&GroupId(1)].is_some());
        assert!(out[&GroupId(2)].is_none());
        let p = McParams {
            unicast_only: true,
            ..params(25)
        };
        assert!(assign(&gs, &p, &BTreeMap::new())
            .values()
            .all(Option::is_none));
    }

    #[test]
    fn heaviest_groups_win_and_overlapping_groups_merge() {
        // 4 groups, 2 addresses. G1 (heavy) and G2 share 9 of 11 members; G3 is disjoint;
        // G4 is tiny traffic and disjoint.
        let a = members(0..10);
        let b = members(1..11);
        let c = members(100..110);
        let d = members(200..210);
        let gs = [
            GroupLoad {
                group: GroupId(1),
                members: &a,
                traffic: 100,
                policy: McPolicy::Auto,
            },
            GroupLoad {
                group: GroupId(2),
                members: &b,
                traffic: 90,
                policy: McPolicy::Auto,
            },
            GroupLoad {
                group: GroupId(3),
                members: &c,
                traffic: 50,
                policy: McPolicy::Auto,
            },
            GroupLoad {
                group: GroupId(4),
                members: &d,
                traffic: 1,
                policy: McPolicy::Auto,
            },
        ];
        let out = assign(&gs, &params(2), &BTreeMap::new());
        assert_eq!(out[&GroupId(1)], out[&GroupId(2)], "merged");
        assert!(out[&GroupId(1)].is_some());
        assert!(out[&GroupId(3)].is_some());
        assert_ne!(out[&GroupId(1)], out[&GroupId(3)]);
        assert_eq!(
            out[&GroupId(4)],
            None,
            "lowest weight falls back to unicast"
        );
    }

    #[test]
    fn use_ipmc_outranks_traffic() {
        let m = members(0..3);
        let gs = [
            GroupLoad {
                group: GroupId(1),
                members: &m,
                traffic: 1_000_000,
                policy: McPolicy::Auto,
            },
            GroupLoad {
                group: GroupId(2),
                members: &m[..1],
                traffic: 0,
                policy: McPolicy::UseIpmc,
            },
        ];
        let disjoint_cap1 = assign(&gs, &params(1), &BTreeMap::new());
        assert!(disjoint_cap1[&GroupId(2)].is_some());
    }

    #[test]
    fn previous_addresses_are_kept() {
        let m = members(0..4);
        let gs: Vec<GroupLoad> = (0..5)
            .map(|i| GroupLoad {
                group: GroupId(i),
                members: &m,
                traffic: 10 + i,
                policy: McPolicy::Auto,
            })
            .collect();
        let first = assign(&gs, &params(25), &BTreeMap::new());
        let prev: BTreeMap<GroupId, Ipv4Addr> = first
            .iter()
            .filter_map(|(g, a)| a.map(|a| (*g, a)))
            .collect();
        // Traffic reverses: ranks change, addresses must not.
        let gs2: Vec<GroupLoad> = (0..5)
            .map(|i| GroupLoad {
                group: GroupId(i),
                members: &m,
                traffic: 100 - i,
                policy: McPolicy::Auto,
            })
            .collect();
        assert_eq!(assign(&gs2, &params(25), &prev), first);
    }

    #[test]
    fn new_address_avoids_recently_freed_ones() {
        let m = members(0..4);
        let low = McParams::default().range_low;
        let prev: BTreeMap<GroupId, Ipv4Addr> = [(GroupId(9), low)].into_iter().collect();
        let gs = [GroupLoad {
            group: GroupId(1),
            members: &m,
            traffic: 1,
            policy: McPolicy::Auto,
        }];
        let out = assign(&gs, &params(25), &prev);
        assert_ne!(out[&GroupId(1)], Some(low));
    }

    #[test]
    fn validation_names_variables() {
        let p = McParams {
            range_low: Ipv4Addr::new(10, 0, 0, 1),
            ..McParams::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("VSYNC_MCRANGE_LOW=10.0.0.1"));
        let p = McParams {
            range_low: Ipv4Addr::new(239, 1, 0, 0),
            range_high: Ipv4Addr::new(239, 0, 0, 0),
            ..McParams::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("VSYNC_MCRANGE_HIGH"));
        assert!(params(5000)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("VSYNC_MAXIPMCADDRS"));
        let tiny = McParams {
            range_low: Ipv4Addr::new(239, 0, 0, 1),
            range_high: Ipv4Addr::new(239, 0, 0, 3),
            ..McParams::default()
        };
        assert_eq!(tiny.capacity(), 3);
    }

    proptest! {
        #[test]
        fn mapping_respects_cap_range_and_policy(
            specs in proptest::collection::vec(
                (proptest::collection::btree_set(0u32..40, 0..12), 0u64..1000, 0u8..3), 0..40),
            max in 0u32..8,
            prev_seed in any::<u64>(),
        ) {
            let member_sets: Vec<Vec<MemberId>> = specs
                .iter()
                .map(|(s, _, _)| s.iter().map(|p| MemberId::new(*p, 1)).collect())
                .collect();
            let gs: Vec<GroupLoad> = specs
                .iter()
                .enumerate()
                .map(|(i, (_, t, p))| GroupLoad {
                    group: GroupId(i as u64),
                    members: &member_sets[i],
                    traffic: *t,
                    policy: [McPolicy::Auto, McPolicy::UseUnicast, McPolicy::UseIpmc][*p as usize],
                })
                .collect();
            let p = McParams {
                range_low: Ipv4Addr::new(239, 9, 0, 0),
                range_high: Ipv4Addr::new(239, 9, 0, 9),
                max_addrs: max,
                unicast_only: false,
            };
            let mut prev = BTreeMap::new();
            let mut rng = vsync_dataplane::rng::Rng::new(prev_seed);
            for g in &gs {
                if rng.chance(0.3) {
                    prev.insert(g.group, Ipv4Addr::from(u32::from(p.range_low) + rng.below(12) as u32));
                }
            }
            let out = assign(&gs, &p, &prev);
            prop_assert_eq!(out.len(), gs.len());
            let used: BTreeSet<Ipv4Addr> = out.values().flatten().copied().collect();
            prop_assert!(used.len() <= max as usize);
            for a in &used {
                prop_assert!(*a >= p.range_low && *a <= p.range_high);
            }
            for g in &gs {
                if g.policy == McPolicy::UseUnicast {
                    prop_assert_eq!(out[&g.group], None);
                }
            }
            // Deterministic.
            prop_assert_eq!(assign(&gs, &p, &prev), out);
        }
    }
}
