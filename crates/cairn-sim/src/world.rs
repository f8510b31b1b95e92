//! The event loop: nodes, segments and the events that move them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cairn_core::ids::FileId;
use cairn_core::keys::SecretKey;
use cairn_core::placement::{Candidate, NetPrefix, Policy, Selector, ZoneId};
use cairn_core::record::{AnyAuthor, Change, Genesis, Record, SegmentInfo};
use cairn_core::repair::{self, RepairQueue, TokenBucket};
use cairn_core::score::{AuditOutcome, Reputation, ScoreParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Config, Report, SimError, Waits};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const MONTH: f64 = 30.44 * DAY as f64;
const YEAR: f64 = 365.25 * DAY as f64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A node starts an offline session.
    GoOffline(u32),
    /// A node is back (if its offline epoch still matches).
    ComeOnline(u32, u32),
    /// A node has been offline for the grace period (if the epoch matches).
    GraceOver(u32, u32),
    /// A node leaves for good.
    Depart(u32),
    /// A newcomer joins.
    Join,
    /// A dropper loses all its data.
    Drop(u32),
    /// A whole /24 disappears.
    SubnetLoss,
    /// A zone goes dark.
    ZoneOutage,
    /// Audit a random piece on a node.
    Audit(u32),
    /// Stewards look for segments to repair.
    Check,
    /// A repair of a segment finishes transferring.
    RepairDone(u32),
}

struct Node {
    subnet: u32,
    zone: u16,
    online: bool,
    offline_since: u64,
    epoch: u32,
    departed: bool,
    dropper: bool,
    dropped: bool,
    disqualified: bool,
    rep: Reputation,
    /// Segments this node was assigned a piece of (may be stale: checked
    /// against the record on use).
    segments: Vec<u32>,
}

impl Node {
    fn has_data(&self) -> bool {
        !self.departed && !self.dropped
    }
}

struct Segment {
    object: u32,
    /// The segment's number inside its object (and record).
    no: u32,
    /// The record's holder of each piece index, kept in step with the
    /// record: events ask "who holds what" far more often than it changes.
    slots: Vec<Option<u32>>,
    record: Record,
    /// Pieces an audit or a repair download found missing, by index.
    bad: Vec<bool>,
    lost: bool,
    dipped_below_k: bool,
    in_repair: bool,
    needed_since: Option<u64>,
    dirty: bool,
}

struct World<'a> {
    cfg: &'a Config,
    rng: StdRng,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    nodes: Vec<Node>,
    segments: Vec<Segment>,
    dirty: Vec<u32>,
    queue: RepairQueue<u32>,
    bucket: TokenBucket,
    steward: SecretKey,
    score: ScoreParams,
    policy: Policy,
    selector: Selector,
    piece_bytes: u64,
    subnets: u32,
    zone_down_until: Vec<u64>,
    // Statistics.
    objects_lost: Vec<bool>,
    repairs: u64,
    pieces_rebuilt: u64,
    repair_bytes: u128,
    waits: Vec<u64>,
    pieces_lost: u64,
    departures: u64,
    joins: u64,
    droppers: u64,
    droppers_dq: u64,
    honest_dq: u64,
    audits: u64,
    node_seconds: u128,
    last_count_at: u64,
    /// Nodes not departed (kept as a count: events are far more frequent
    /// than joins and departures).
    live_nodes: u64,
}

/// Runs the simulation described by `cfg`.
pub fn run(cfg: &Config) -> Result<Report, SimError> {
    if cfg.k == 0 || cfg.k > cfg.n || cfg.n > cairn_core::erasure::MAX_PIECES {
        return Err(SimError::Config(format!("k={} n={}", cfg.k, cfg.n)));
    }
    if cfg.nodes < usize::from(cfg.n) * 2 {
        return Err(SimError::Config(format!(
            "{} nodes cannot place {} pieces per segment with room to repair; use at least {}",
            cfg.nodes,
            cfg.n,
            usize::from(cfg.n) * 2
        )));
    }
    if cfg.zones < cfg.n {
        return Err(SimError::Config(format!(
            "{} zones cannot hold {} pieces of a segment apart (one per zone)",
            cfg.zones, cfg.n
        )));
    }
    if cfg.nodes_per_subnet < 1.0 || cfg.check_interval_secs == 0 {
        return Err(SimError::Config(
            "nodes per subnet must be at least 1 and the check interval positive".into(),
        ));
    }
    let mut w = World::new(cfg);
    w.populate();
    w.upload();
    w.schedule_background();
    let end = cfg.days * DAY;
    while let Some(Reverse((t, _, ev))) = w.events.pop() {
        if t > end {
            break;
        }
        w.advance(t);
        w.handle(ev);
    }
    w.advance(end);
    Ok(w.report())
}

impl<'a> World<'a> {
    fn new(cfg: &'a Config) -> Self {
        let piece_bytes = cfg.segment_bytes.div_ceil(u64::from(cfg.k));
        let rate = cfg.repair_bytes_per_sec_per_node * cfg.nodes as u64;
        World {
            cfg,
            rng: StdRng::seed_from_u64(cfg.seed),
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            nodes: Vec::with_capacity(cfg.nodes * 2),
            segments: Vec::new(),
            dirty: Vec::new(),
            queue: RepairQueue::new(1 << 20),
            // A burst of one check interval's worth of bandwidth.
            bucket: TokenBucket::new(rate, rate.saturating_mul(cfg.check_interval_secs), 0),
            steward: SecretKey::from_bytes([0x57; 32]),
            score: ScoreParams::default(),
            policy: Policy::default(),
            selector: Selector::new(),
            piece_bytes,
            subnets: 0,
            zone_down_until: vec![0; usize::from(cfg.zones)],
            objects_lost: vec![false; cfg.objects],
            repairs: 0,
            pieces_rebuilt: 0,
            repair_bytes: 0,
            waits: Vec::new(),
            pieces_lost: 0,
            departures: 0,
            joins: 0,
            droppers: 0,
            droppers_dq: 0,
            honest_dq: 0,
            audits: 0,
            node_seconds: 0,
            last_count_at: 0,
            live_nodes: 0,
        }
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.events
            .push(Reverse((self.now.saturating_add(delay), self.seq, ev)));
    }

    /// An exponential delay with mean `mean` seconds.
    fn exp(&mut self, mean: f64) -> u64 {
        let u: f64 = self.rng.r#gen::<f64>();
        let d = -(1.0 - u).ln() * mean;
        if d.is_finite() {
            d.max(1.0) as u64
        } else {
            u64::MAX / 4
        }
    }

    fn advance(&mut self, t: u64) {
        if t > self.last_count_at {
            self.node_seconds += u128::from(self.live_nodes) * u128::from(t - self.last_count_at);
            self.last_count_at = t;
        }
        self.now = t;
    }

    fn new_node(&mut self) -> u32 {
        // A new /24 with probability 1/mean, otherwise an existing one.
        let subnet =
            if self.subnets == 0 || self.rng.r#gen::<f64>() < 1.0 / self.cfg.nodes_per_subnet {
                self.subnets += 1;
                self.subnets - 1
            } else {
                self.rng.gen_range(0..self.subnets)
            };
        let zone = self.rng.gen_range(0..self.cfg.zones);
        let dropper = self.rng.r#gen::<f64>() < self.cfg.churn.dropper_share;
        let id = self.nodes.len() as u32;
        self.live_nodes += 1;
        self.nodes.push(Node {
            subnet,
            zone,
            online: true,
            offline_since: 0,
            epoch: 0,
            departed: false,
            dropper,
            dropped: false,
            disqualified: false,
            rep: Reputation::new(&self.score),
            segments: Vec::new(),
        });
        if dropper {
            let end = self.cfg.days * DAY;
            let when = self.rng.gen_range(0..end.max(1));
            self.droppers += 1;
            self.at(when, Ev::Drop(id));
        }
        id
    }

    fn populate(&mut self) {
        for _ in 0..self.cfg.nodes {
            let id = self.new_node();
            // Everyone starts vetted: the simulated network is established.
            for _ in 0..self.score.vetting_audits {
                self.nodes[id as usize]
                    .rep
                    .record(&self.score, 0, AuditOutcome::Passed, None);
            }
        }
    }

    fn schedule_background(&mut self) {
        let c = self.cfg.churn.clone();
        for id in 0..self.nodes.len() as u32 {
            self.schedule_node(id);
        }
        let n = self.cfg.nodes as f64;
        if c.departures_per_month > 0.0 {
            let mean = MONTH / (c.departures_per_month * n);
            let d = self.exp(mean);
            self.at(d, Ev::Join);
        }
        if c.subnet_losses_per_year > 0.0 {
            let d = self.exp(YEAR / c.subnet_losses_per_year);
            self.at(d, Ev::SubnetLoss);
        }
        if c.zone_outages_per_year > 0.0 {
            let d = self.exp(YEAR / c.zone_outages_per_year);
            self.at(d, Ev::ZoneOutage);
        }
        self.at(self.cfg.check_interval_secs, Ev::Check);
    }

    /// A node's own future: its departure, sessions and audits.
    fn schedule_node(&mut self, id: u32) {
        let c = &self.cfg.churn;
        let (dep, sessions) = (c.departures_per_month, c.offline_sessions_per_day);
        if dep > 0.0 {
            let d = self.exp(MONTH / dep);
            self.at(d, Ev::Depart(id));
        }
        if sessions > 0.0 {
            let d = self.exp(DAY as f64 / sessions);
            self.at(d, Ev::GoOffline(id));
        }
        if self.cfg.audits_per_node_per_day > 0.0 {
            let d = self.exp(DAY as f64 / self.cfg.audits_per_node_per_day);
            self.at(d, Ev::Audit(id));
        }
    }

    fn candidate(&self, id: u32) -> Candidate {
        let node = &self.nodes[id as usize];
        let [_, a, b, c] = node.subnet.to_be_bytes();
        Candidate {
            peer: id.to_be_bytes().to_vec(),
            network: Some(NetPrefix::V4([a, b, c])),
            zone: Some(ZoneId(u64::from(node.zone))),
            free_bytes: None,
            audit_score: Some(node.rep.score()),
            uptime: None,
            latency_ms: None,
            vetted: node.rep.is_vetted(&self.score),
        }
    }

    fn eligible(&self, id: u32) -> bool {
        let node = &self.nodes[id as usize];
        node.online
            && !node.departed
            && !node.disqualified
            && self.zone_down_until[usize::from(node.zone)] <= self.now
    }

    /// What a DHT lookup would offer: a random sample of reachable nodes.
    fn sample(&mut self, want: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(want);
        let total = self.nodes.len() as u32;
        for _ in 0..want * 8 {
            if out.len() >= want {
                break;
            }
            let id = self.rng.gen_range(0..total);
            if self.eligible(id) && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// Picks `count` new holders for a segment whose healthy holders are `keep`.
    fn place(&mut self, key: [u8; 32], keep: &[u32], count: usize) -> Vec<u32> {
        let pool = self.sample(count * 3 + usize::from(self.cfg.n));
        let candidates: Vec<Candidate> = pool
            .iter()
            .filter(|id| !keep.contains(id))
            .map(|&id| self.candidate(id))
            .collect();
        let existing: Vec<Candidate> = keep.iter().map(|&id| self.candidate(id)).collect();
        let sites: Vec<_> = existing.iter().map(Candidate::site).collect();
        let chosen = self.selector.select(
            &key,
            count,
            self.piece_bytes,
            &candidates,
            &sites,
            &self.policy,
        );
        chosen
            .iter()
            .take(count)
            .filter_map(|&i| {
                let peer = candidates.get(i)?.peer.as_slice();
                Some(u32::from_be_bytes(peer.try_into().ok()?))
            })
            .collect()
    }

    fn upload(&mut self) {
        let owner = SecretKey::from_bytes([0x0a; 32]);
        let (k, n) = (self.cfg.k, self.cfg.n);
        for object in 0..self.cfg.objects as u32 {
            let mut file = [0u8; 32];
            self.rng.fill(&mut file);
            let file_id = FileId(file);
            let segs = self.cfg.segments_per_object.max(1);
            let genesis = Genesis {
                file_id,
                owner: owner.public(),
                k,
                n,
                coded: n,
                created_at: 0,
                segments: (0..segs)
                    .map(|_| SegmentInfo {
                        sealed_len: self.cfg.segment_bytes,
                        hashes: vec![[0; 32]; usize::from(n)],
                    })
                    .collect(),
            };
            let mut assignments = Vec::new();
            let mut holders_per_seg = Vec::new();
            for s in 0..segs {
                let holders = self.place(file_id.segment_key(u64::from(s)), &[], usize::from(n));
                for (i, h) in holders.iter().enumerate() {
                    assignments.push((s, i as u16, h.to_be_bytes().to_vec()));
                }
                holders_per_seg.push(holders);
            }
            let Ok(record) = Record::create(genesis, &owner, assignments, u64::MAX) else {
                continue;
            };
            // Every segment row keeps its own copy of the object's record
            // and reads and repairs only its own segment in it, so a row is
            // self-contained (a real steward holds one record per object).
            for (s, holders) in holders_per_seg.into_iter().enumerate() {
                let seg_index = self.segments.len() as u32;
                for h in &holders {
                    self.nodes[*h as usize].segments.push(seg_index);
                }
                self.segments.push(Segment {
                    object,
                    no: s as u32,
                    slots: slots_of(&record, s as u32, n),
                    record: record.clone(),
                    bad: vec![false; usize::from(n)],
                    lost: false,
                    dipped_below_k: false,
                    in_repair: false,
                    needed_since: None,
                    dirty: holders.len() < usize::from(n),
                });
            }
        }
        for s in 0..self.segments.len() as u32 {
            if self.segments[s as usize].dirty {
                self.dirty.push(s);
            }
        }
    }

    /// The segment number inside its record.
    fn seg_no(&self, s: u32) -> u32 {
        self.segments[s as usize].no
    }

    fn holders(&self, s: u32) -> Vec<(u16, u32)> {
        self.segments[s as usize]
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((i as u16, (*h)?)))
            .collect()
    }

    fn mark_dirty(&mut self, s: u32) {
        let seg = &mut self.segments[s as usize];
        if !seg.dirty && !seg.lost {
            seg.dirty = true;
            self.dirty.push(s);
        }
    }

    fn reachable(&self, id: u32) -> bool {
        let node = &self.nodes[id as usize];
        node.online && !node.departed && self.zone_down_until[usize::from(node.zone)] <= self.now
    }

    /// After a node lost data or went away: permanent loss and availability.
    fn check_segments_of(&mut self, id: u32) {
        // Drop entries of pieces that moved away since.
        let mut segs = std::mem::take(&mut self.nodes[id as usize].segments);
        segs.retain(|&s| self.segments[s as usize].slots.contains(&Some(id)));
        segs.dedup();
        self.nodes[id as usize].segments = segs.clone();
        for s in segs {
            self.check_segment(s);
            self.mark_dirty(s);
        }
    }

    fn check_segment(&mut self, s: u32) {
        if self.segments[s as usize].lost {
            return;
        }
        let holders = self.holders(s);
        let k = usize::from(self.cfg.k);
        let exist = holders
            .iter()
            .filter(|(i, h)| {
                self.nodes[*h as usize].has_data()
                    && !self.segments[s as usize].bad[usize::from(*i)]
            })
            .count();
        let reachable = holders
            .iter()
            .filter(|(_, h)| self.nodes[*h as usize].has_data() && self.reachable(*h))
            .count();
        let seg = &mut self.segments[s as usize];
        if reachable < k {
            seg.dipped_below_k = true;
        }
        if exist < k {
            seg.lost = true;
            let object = seg.object as usize;
            self.objects_lost[object] = true;
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::GoOffline(id) => {
                let node = &self.nodes[id as usize];
                if !node.departed && node.online {
                    let back = self.exp(self.cfg.churn.offline_hours * HOUR as f64);
                    self.take_offline(id, back);
                }
            }
            Ev::ComeOnline(id, epoch) => {
                let node = &mut self.nodes[id as usize];
                if node.departed || node.epoch != epoch {
                    return;
                }
                node.online = true;
                let next = self.exp(DAY as f64 / self.cfg.churn.offline_sessions_per_day);
                self.at(next, Ev::GoOffline(id));
                // Its pieces count again: let stewards re-assess.
                let segs = self.nodes[id as usize].segments.clone();
                for s in segs {
                    self.mark_dirty(s);
                }
            }
            Ev::GraceOver(id, epoch) => {
                let node = &self.nodes[id as usize];
                if !node.departed && !node.online && node.epoch == epoch {
                    let segs = node.segments.clone();
                    for s in segs {
                        self.mark_dirty(s);
                    }
                }
            }
            Ev::Depart(id) => self.depart(id),
            Ev::Join => {
                let id = self.new_node();
                self.joins += 1;
                self.schedule_node(id);
                let mean = MONTH / (self.cfg.churn.departures_per_month * self.cfg.nodes as f64);
                let d = self.exp(mean);
                self.at(d, Ev::Join);
            }
            Ev::Drop(id) => {
                let node = &mut self.nodes[id as usize];
                if node.departed || node.dropped {
                    return;
                }
                node.dropped = true;
                self.count_lost_pieces(id);
                let segs = self.nodes[id as usize].segments.clone();
                for s in segs {
                    self.check_segment(s);
                }
            }
            Ev::SubnetLoss => {
                let subnet = self.rng.gen_range(0..self.subnets.max(1));
                let victims: Vec<u32> = (0..self.nodes.len() as u32)
                    .filter(|&i| self.nodes[i as usize].subnet == subnet)
                    .collect();
                for id in victims {
                    self.depart(id);
                }
                let d = self.exp(YEAR / self.cfg.churn.subnet_losses_per_year);
                self.at(d, Ev::SubnetLoss);
            }
            Ev::ZoneOutage => {
                let zone = self.rng.gen_range(0..self.cfg.zones);
                let hours = self.cfg.churn.zone_outage_hours;
                let until = self.now + (hours * HOUR as f64) as u64;
                self.zone_down_until[usize::from(zone)] = until;
                let members: Vec<u32> = (0..self.nodes.len() as u32)
                    .filter(|&i| self.nodes[i as usize].zone == zone)
                    .collect();
                // Members go offline together and come back at the end.
                for id in members {
                    if !self.nodes[id as usize].departed {
                        self.take_offline(id, until - self.now);
                    }
                }
                let d = self.exp(YEAR / self.cfg.churn.zone_outages_per_year);
                self.at(d, Ev::ZoneOutage);
            }
            Ev::Audit(id) => self.audit(id),
            Ev::Check => {
                self.check();
                self.at(self.cfg.check_interval_secs, Ev::Check);
            }
            Ev::RepairDone(s) => self.finish_repair(s),
        }
    }

    /// Takes a node offline (if it is not already) until `back` from now;
    /// an earlier return it had scheduled no longer counts.
    fn take_offline(&mut self, id: u32, back: u64) {
        let node = &mut self.nodes[id as usize];
        if node.online {
            node.online = false;
            node.offline_since = self.now;
        }
        node.epoch += 1;
        let epoch = node.epoch;
        self.at(back, Ev::ComeOnline(id, epoch));
        let grace = (self.cfg.grace_hours * HOUR as f64) as u64;
        self.at(grace, Ev::GraceOver(id, epoch));
        let segs = self.nodes[id as usize].segments.clone();
        for s in segs {
            self.check_segment(s);
        }
    }

    fn count_lost_pieces(&mut self, id: u32) {
        let segs = self.nodes[id as usize].segments.clone();
        for s in segs {
            if self.holders(s).iter().any(|(_, h)| *h == id) {
                self.pieces_lost += 1;
            }
        }
    }

    fn depart(&mut self, id: u32) {
        if self.nodes[id as usize].departed {
            return;
        }
        if self.nodes[id as usize].has_data() {
            self.count_lost_pieces(id);
        }
        let node = &mut self.nodes[id as usize];
        node.departed = true;
        self.live_nodes -= 1;
        if node.online {
            node.online = false;
            node.offline_since = self.now;
        }
        node.epoch += 1;
        let epoch = node.epoch;
        self.departures += 1;
        let grace = (self.cfg.grace_hours * HOUR as f64) as u64;
        self.at(grace, Ev::GraceOver(id, epoch));
        self.check_segments_of(id);
    }

    fn audit(&mut self, id: u32) {
        if self.nodes[id as usize].departed || self.nodes[id as usize].disqualified {
            return;
        }
        let d = self.exp(DAY as f64 / self.cfg.audits_per_node_per_day);
        self.at(d, Ev::Audit(id));
        // A random piece the node is still assigned.
        let segs = &self.nodes[id as usize].segments;
        if segs.is_empty() {
            return;
        }
        let s = segs[self.rng.gen_range(0..segs.len())];
        let Some((index, _)) = self.holders(s).into_iter().find(|(_, h)| *h == id) else {
            // Stale entry: the piece moved away. Forget it.
            self.nodes[id as usize].segments.retain(|&x| x != s);
            return;
        };
        // As in the node: a steward audits only holders that answer its
        // liveness probe; unreachable ones are liveness's business (grace,
        // then repair), so being offline never costs audit score.
        if !self.reachable(id) {
            return;
        }
        self.audits += 1;
        let outcome = if self.nodes[id as usize].dropped {
            AuditOutcome::Missing
        } else {
            AuditOutcome::Passed
        };
        let now = self.now;
        let score = self.score.clone();
        let node = &mut self.nodes[id as usize];
        node.rep.record(&score, now, outcome, None);
        if outcome == AuditOutcome::Missing {
            self.segments[s as usize].bad[usize::from(index)] = true;
            self.mark_dirty(s);
        }
        let node = &mut self.nodes[id as usize];
        if !node.disqualified && node.rep.is_disqualified() {
            node.disqualified = true;
            if node.dropper {
                self.droppers_dq += 1;
            } else {
                self.honest_dq += 1;
            }
            let segs = node.segments.clone();
            for s in segs {
                self.mark_dirty(s);
            }
        }
    }

    /// The steward's view: does piece `index` of segment `s` on `holder` count?
    fn healthy(&self, s: u32, index: u16, holder: u32) -> bool {
        let node = &self.nodes[holder as usize];
        let grace = (self.cfg.grace_hours * HOUR as f64) as u64;
        let unreachable_too_long = !self.reachable(holder)
            && self.now.saturating_sub(node.offline_since.min(self.now)) >= grace;
        !node.disqualified
            && !self.segments[s as usize].bad[usize::from(index)]
            && !unreachable_too_long
    }

    fn check(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for s in dirty {
            let seg = &mut self.segments[s as usize];
            seg.dirty = false;
            if seg.lost || seg.in_repair {
                continue;
            }
            let no = self.seg_no(s);
            let health = {
                let seg = &self.segments[s as usize];
                let all = repair::assess(&seg.record, |segment, index, holder| {
                    segment != no
                        || holder
                            .try_into()
                            .map(|b| self.healthy(s, index, u32::from_be_bytes(b)))
                            .unwrap_or(false)
                });
                all.into_iter().nth(no as usize)
            };
            let Some(health) = health else { continue };
            if health.needs_repair(&self.cfg.repair) {
                let seg = &mut self.segments[s as usize];
                seg.needed_since.get_or_insert(self.now);
                self.queue.push(s, health.margin(), self.now);
            }
        }
        // Start what the bandwidth allows, most urgent first.
        let now_ms = self.now.saturating_mul(1000);
        while let Some(job) = self.queue.pop() {
            let s = job.key;
            if self.segments[s as usize].lost || self.segments[s as usize].in_repair {
                continue;
            }
            let bytes = self.repair_bytes_for(s);
            if self.bucket.take(bytes, now_ms).is_err() {
                self.queue.push(s, job.margin, job.queued_at);
                break;
            }
            self.segments[s as usize].in_repair = true;
            let secs = bytes / self.cfg.repairer_bytes_per_sec.max(1) + 1;
            self.at(secs, Ev::RepairDone(s));
        }
    }

    /// Bytes a repair of `s` moves: k downloads plus the rebuilt uploads.
    fn repair_bytes_for(&self, s: u32) -> u64 {
        let healthy = self
            .holders(s)
            .iter()
            .filter(|(i, h)| self.healthy(s, *i, *h))
            .count() as u64;
        let rebuild = u64::from(self.cfg.n).saturating_sub(healthy);
        (u64::from(self.cfg.k) + rebuild) * self.piece_bytes
    }

    fn finish_repair(&mut self, s: u32) {
        self.segments[s as usize].in_repair = false;
        if self.segments[s as usize].lost {
            return;
        }
        let no = self.seg_no(s);
        let holders = self.holders(s);
        // Sources the steward trusts, and which of them really deliver.
        let mut good = Vec::new();
        for &(i, h) in &holders {
            if !self.healthy(s, i, h) {
                continue;
            }
            let node = &self.nodes[h as usize];
            if node.has_data() && self.reachable(h) {
                good.push((i, h));
            } else if !node.has_data() {
                // The download finds the piece missing.
                self.segments[s as usize].bad[usize::from(i)] = true;
            }
        }
        if good.len() < usize::from(self.cfg.k) {
            self.mark_dirty(s);
            return;
        }
        let keep: Vec<u32> = good.iter().map(|(_, h)| *h).collect();
        let rebuild: Vec<u16> = (0..self.cfg.n)
            .filter(|i| !good.iter().any(|(g, _)| g == i))
            .take(usize::from(self.cfg.n) - good.len())
            .collect();
        let file_id = self.segments[s as usize].record.genesis().file_id;
        let targets = self.place(file_id.segment_key(u64::from(no)), &keep, rebuild.len());
        let changes: Vec<Change> = rebuild
            .iter()
            .zip(&targets)
            .map(|(&index, &t)| Change::Assign {
                segment: no,
                index,
                holder: t.to_be_bytes().to_vec(),
            })
            .collect();
        let placed = changes.len();
        let now = self.now;
        let steward = &self.steward;
        let seg = &mut self.segments[s as usize];
        if placed > 0 && seg.record.update(steward, now, changes, &AnyAuthor).is_ok() {
            seg.slots = slots_of(&seg.record, no, self.cfg.n);
            for (&index, &t) in rebuild.iter().zip(&targets) {
                seg.bad[usize::from(index)] = false;
                self.nodes[t as usize].segments.push(s);
            }
            self.repairs += 1;
            self.pieces_rebuilt += placed as u64;
            self.repair_bytes +=
                u128::from((u64::from(self.cfg.k) + placed as u64) * self.piece_bytes);
            if let Some(since) = self.segments[s as usize].needed_since.take() {
                self.waits.push(now - since);
            }
        }
        // Placed fewer than needed (or none): the next pass tries again.
        self.mark_dirty(s);
    }

    fn report(&self) -> Report {
        let cfg = self.cfg;
        let secs = (cfg.days * DAY) as f64;
        let months = secs / MONTH;
        let years = secs / YEAR;
        let segments = self.segments.len();
        let stored = segments as f64 * f64::from(cfg.n) * self.piece_bytes as f64;
        let traffic = if stored > 0.0 && months > 0.0 {
            self.repair_bytes as f64 / stored / months * 100.0
        } else {
            0.0
        };
        let pieces = segments as f64 * f64::from(cfg.n);
        let piece_loss_per_month = if pieces > 0.0 && months > 0.0 {
            self.pieces_lost as f64 / pieces / months
        } else {
            0.0
        };
        let mut waits = self.waits.clone();
        waits.sort_unstable();
        let hours = |s: u64| s as f64 / HOUR as f64;
        let pick = |q: f64| {
            if waits.is_empty() {
                0.0
            } else {
                hours(waits[((waits.len() - 1) as f64 * q).round() as usize])
            }
        };
        let wait = Waits {
            mean: if waits.is_empty() {
                0.0
            } else {
                hours(waits.iter().sum::<u64>()) / waits.len() as f64
            },
            p50: pick(0.5),
            p99: pick(0.99),
            max: pick(1.0),
        };
        let objects_lost = self.objects_lost.iter().filter(|l| **l).count();
        let object_years = cfg.objects as f64 * years;
        let observed_nines_bound = if object_years > 0.0 {
            let bound = if objects_lost == 0 {
                3.0 / object_years
            } else {
                objects_lost as f64 / object_years
            };
            round3(-bound.log10())
        } else {
            0.0
        };
        let durability_nines = round3(self.model_nines(piece_loss_per_month, &wait, years));
        Report {
            config: cfg.clone(),
            expansion: round3(f64::from(cfg.n) / f64::from(cfg.k)),
            objects: cfg.objects,
            objects_lost,
            segments_lost: self.segments.iter().filter(|s| s.lost).count(),
            segments_below_k: self.segments.iter().filter(|s| s.dipped_below_k).count(),
            durability_nines,
            observed_nines_bound,
            repair_traffic_pct_per_month: round3(traffic),
            repairs: self.repairs,
            pieces_rebuilt: self.pieces_rebuilt,
            repair_wait_hours: Waits {
                mean: round3(wait.mean),
                p50: round3(wait.p50),
                p99: round3(wait.p99),
                max: round3(wait.max),
            },
            piece_loss_per_month: round6(piece_loss_per_month),
            departures: self.departures,
            joins: self.joins,
            droppers: self.droppers,
            droppers_disqualified: self.droppers_dq,
            honest_disqualified: self.honest_dq,
            audits: self.audits,
            node_days: round3(self.node_seconds as f64 / DAY as f64),
        }
    }

    /// The model behind `durability_nines`: a segment at the repair
    /// threshold `t` is lost if more than `t − k` of its `t` pieces are lost
    /// for good within the repair window `W` (grace + p99 wait), each
    /// independently with probability `p = 1 − exp(−λW)` for the measured
    /// piece loss rate λ. A segment goes through `repairs / segment-year`
    /// such windows a year.
    fn model_nines(&self, loss_per_month: f64, wait: &Waits, years: f64) -> f64 {
        let cfg = self.cfg;
        let t = cfg.repair.threshold(cfg.k, cfg.n);
        let lambda = loss_per_month / MONTH; // per second
        let window = cfg.grace_hours * HOUR as f64 + wait.p99 * HOUR as f64;
        let p = 1.0 - (-lambda * window).exp();
        let need = usize::from(t - cfg.k) + 1;
        let p_cycle = binomial_tail(usize::from(t), p, need);
        let segments = self.segments.len().max(1) as f64;
        let cycles = (self.repairs as f64 / segments / years.max(1e-9)).max(1.0);
        let p_year = cycles * p_cycle * f64::from(cfg.segments_per_object.max(1));
        if p_year <= 1e-20 {
            20.0
        } else {
            (-p_year.log10()).clamp(0.0, 20.0)
        }
    }
}

/// Who holds each piece index of segment `no` in `record`.
fn slots_of(record: &Record, no: u32, n: u16) -> Vec<Option<u32>> {
    let mut slots = vec![None; usize::from(n)];
    for (i, holder) in record.holders(no) {
        if let (Some(slot), Ok(b)) = (slots.get_mut(usize::from(i)), <[u8; 4]>::try_from(holder)) {
            *slot = Some(u32::from_be_bytes(b));
        }
    }
    slots
}

/// P[X ≥ m] for X ~ Binomial(t, p).
fn binomial_tail(t: usize, p: f64, m: usize) -> f64 {
    let mut total = 0.0;
    for x in m..=t {
        total += choose(t, x) * p.powi(x as i32) * (1.0 - p).powi((t - x) as i32);
    }
    total
}

fn choose(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_small_cases() {
        assert!((binomial_tail(2, 0.5, 1) - 0.75).abs() < 1e-12);
        assert!((binomial_tail(3, 0.1, 3) - 0.001).abs() < 1e-12);
        assert_eq!(binomial_tail(3, 0.0, 1), 0.0);
    }
}
