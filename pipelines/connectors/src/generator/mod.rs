//! `generator` source: synthetic card / e-commerce transactions in the schema documented in
//! [`schema`] (the default pipelines' transaction), with labelled fraud patterns injected
//! (`is_fraud = true`):
//!
//! * **amount spike** — one purchase 8–40× the user's typical amount;
//! * **velocity burst** — 6–15 purchases within minutes;
//! * **impossible travel** — a purchase at home, then one in a city ≥ 3000 km away minutes later;
//! * **odd-hour risky category** — electronics, jewelry, gift cards or crypto at 01:00–05:00;
//! * **card testing** — 8–25 tiny online amounts at new merchants from a new device.
//!
//! Deterministic for a seed. Event time advances as a Poisson process of
//! `events_per_second`; a configurable slice of events *arrives* late by up to
//! `max_delay_ms` (out of order), so `ts` is never more than `max_delay_ms` behind the newest
//! `ts` already emitted. [`GeneratorSource`] runs it in a pipeline, paced to a wall-clock `rate`
//! or as fast as possible.

pub mod options;
pub mod schema;
mod source;
mod world;

pub use options::{SPEC, config_from, pace_from};
pub use schema::{Transaction, check_table, transaction_schema};
pub use source::GeneratorSource;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;
use txguard_engine::event::format_micros;

pub use world::{CATEGORIES, CITIES, haversine_km};

/// The connector.
pub struct GeneratorConnector;

impl txguard_engine::connector::Connector for GeneratorConnector {
    fn spec(&self) -> txguard_engine::sql::ConnectorSpec {
        SPEC
    }

    fn open_source<'a>(
        &'a self,
        table: &'a txguard_engine::sql::TableDef,
        resume: Option<&'a serde_json::Value>,
    ) -> futures::future::BoxFuture<
        'a,
        Result<
            Box<dyn txguard_engine::connector::Source>,
            txguard_engine::connector::ConnectorError,
        >,
    > {
        Box::pin(async move {
            let at = crate::resume_at::<source::GeneratorPosition>(table, resume)?;
            Ok(Box::new(GeneratorSource::from_table(table, at)?)
                as Box<dyn txguard_engine::connector::Source>)
        })
    }
}
use world::{MERCHANTS_PER_CATEGORY, RISKY_FROM, User};

/// Default event-time start: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MICROS: i64 = 1_767_225_600_000_000;

/// Generator options (the `WITH (...)` options of a `connector = 'generator'` table).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub users: usize,
    /// Stop after this many events; `None` = endless.
    pub count: Option<u64>,
    /// Event-time intensity: transactions per simulated second, over all users (default 1:
    /// about 8.6 transactions per user per day with 10k users).
    pub events_per_second: f64,
    /// Event time of the first transaction (UTC microseconds).
    pub start_micros: i64,
    /// Share of transactions that start a fraud episode.
    pub fraud_rate: f64,
    /// Share of transactions that arrive late (out of order).
    pub out_of_order: f64,
    /// Largest arrival delay of a late transaction.
    pub max_delay_ms: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 10_000,
            count: None,
            events_per_second: 1.0,
            start_micros: DEFAULT_START_MICROS,
            fraud_rate: 0.002,
            out_of_order: 0.01,
            max_delay_ms: 3000,
        }
    }
}

/// Invalid generator options.
#[derive(Debug, thiserror::Error)]
#[error("generator option {option}: {message}")]
pub struct ConfigError {
    pub option: &'static str,
    pub message: String,
}

impl GeneratorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option, message: String| Err(ConfigError { option, message });
        if self.users == 0 {
            return bad("users", "must be at least 1".into());
        }
        if !(self.events_per_second > 0.0 && self.events_per_second.is_finite()) {
            return bad(
                "events_per_second",
                format!("{} is not a positive number", self.events_per_second),
            );
        }
        for (name, v) in [
            ("fraud_rate", self.fraud_rate),
            ("out_of_order", self.out_of_order),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(name, format!("{v} is not between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// The fraud pattern behind a labelled transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FraudPattern {
    AmountSpike,
    VelocityBurst,
    ImpossibleTravel,
    OddHourCategory,
    CardTesting,
}

impl FraudPattern {
    /// The pattern's name, as the `fraud_pattern` column gives it.
    pub fn name(self) -> &'static str {
        match self {
            FraudPattern::AmountSpike => "amount_spike",
            FraudPattern::VelocityBurst => "velocity_burst",
            FraudPattern::ImpossibleTravel => "impossible_travel",
            FraudPattern::OddHourCategory => "odd_hour_category",
            FraudPattern::CardTesting => "card_testing",
        }
    }
}

/// One generated transaction with its event time and, for fraud, the pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub ts_micros: i64,
    pub transaction: Transaction,
    pub pattern: Option<FraudPattern>,
}

/// What distinguishes one transaction from another of the same user.
struct Draft {
    amount: f64,
    category: usize,
    merchant: Merchant,
    city: Option<usize>,
    channel: &'static str,
    device: Option<u32>,
    pattern: Option<FraudPattern>,
}

/// A merchant of the transaction's category: its `n`-th (`m-groceries-17`), or a card
/// tester's shop (`m-online_retail-t123`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merchant {
    Regular(u16),
    CardTest(u16),
}

/// One generated transaction, compact and free of heap allocations: its text fields are
/// formatted only on output ([`Generated`] for JSON, [`Generator::next_batch`] straight into
/// Arrow).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub ts_micros: i64,
    /// The transaction's number in the stream (its id is `tx-{seed:x}-{seq}`).
    seq: u64,
    user: u32,
    amount: f64,
    category: u8,
    merchant: Merchant,
    city: u8,
    /// Rounded to 4 decimals.
    lat: f64,
    lon: f64,
    channel: &'static str,
    device: u32,
    pub pattern: Option<FraudPattern>,
}

impl Event {
    fn currency(&self) -> &'static str {
        CITIES[usize::from(self.city)].2
    }
    fn location(&self) -> &'static str {
        CITIES[usize::from(self.city)].0
    }
    fn country(&self) -> &'static str {
        CITIES[usize::from(self.city)].1
    }
    fn category(&self) -> &'static str {
        CATEGORIES[usize::from(self.category)]
    }

    /// `tx-{seed:x}-{seq}` into `out`, after `prefix` (`tx-{seed:x}-`).
    fn write_transaction_id(&self, prefix: &str, out: &mut String) {
        out.push_str(prefix);
        out.push_str(itoa::Buffer::new().format(self.seq));
    }

    /// `u` and (at least) six digits of the user's number.
    fn write_user_id(&self, out: &mut String) {
        out.push('u');
        let mut b = itoa::Buffer::new();
        let digits = b.format(self.user);
        for _ in digits.len()..6 {
            out.push('0');
        }
        out.push_str(digits);
    }

    /// `d` and eight hex digits.
    fn write_device(&self, out: &mut String) {
        out.push('d');
        for shift in (0..8).rev() {
            let nibble = (self.device >> (shift * 4)) & 0xf;
            out.push(char::from(b"0123456789abcdef"[nibble as usize]));
        }
    }

    /// `m-`, the category, `-`, and the merchant's number (after a `t` for card testers).
    fn write_merchant(&self, out: &mut String) {
        out.push_str("m-");
        out.push_str(self.category());
        out.push('-');
        let n = match self.merchant {
            Merchant::Regular(n) => n,
            Merchant::CardTest(n) => {
                out.push('t');
                n
            }
        };
        out.push_str(itoa::Buffer::new().format(n));
    }
}

/// The text a `write_*` method of [`Event`] makes, as a `String`.
fn text(f: impl FnOnce(&mut String)) -> String {
    let mut s = String::new();
    f(&mut s);
    s
}

/// An event scheduled for the future (fraud episodes span minutes or hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Planned {
    ts: i64,
    seq: u64,
    user: usize,
    kind: PlannedKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PlannedKind {
    Spike,
    Burst,
    HomeBeforeTravel,
    FarAway(usize),
    OddHour,
    CardTest(u32),
}

/// An event waiting for its arrival time.
struct Arrival {
    arrival: i64,
    seq: u64,
    event: Event,
}
impl PartialEq for Arrival {
    fn eq(&self, o: &Self) -> bool {
        (self.arrival, self.seq) == (o.arrival, o.seq)
    }
}
impl Eq for Arrival {}
impl PartialOrd for Arrival {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Arrival {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.arrival, self.seq).cmp(&(o.arrival, o.seq))
    }
}

/// The transaction stream, in arrival order.
pub struct Generator {
    cfg: GeneratorConfig,
    rng: ChaCha8Rng,
    /// The same stream as `rng` was when the users were made, to redraw a user's exact
    /// category weights (see [`User::draw_category`]).
    replay: ChaCha8Rng,
    users: Vec<User>,
    /// Users weighted by activity, sampled in O(1) (a million users is a normal benchmark).
    activity: WeightedAliasIndex<f64>,
    clock: i64,
    seq: u64,
    tx_seq: u64,
    emitted: u64,
    planned: BinaryHeap<Reverse<Planned>>,
    arrivals: BinaryHeap<Reverse<Arrival>>,
    /// `tx-{seed:x}-`, the start of every transaction id.
    id_prefix: String,
    /// The events of the batch being made, kept for the next ([`Generator::next_batch`]).
    batch: Vec<Event>,
}

impl Generator {
    pub fn new(cfg: GeneratorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let (users, activity): (Vec<User>, Vec<f64>) =
            (0..cfg.users).map(|_| User::new(&mut rng)).unzip();
        let activity = WeightedAliasIndex::new(activity).map_err(|e| ConfigError {
            option: "users",
            message: format!("cannot weight the users by activity: {e}"),
        })?;
        let id_prefix = format!("tx-{:x}-", cfg.seed);
        Ok(Generator {
            clock: cfg.start_micros,
            replay: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            rng,
            users,
            activity,
            seq: 0,
            tx_seq: 0,
            emitted: 0,
            planned: BinaryHeap::new(),
            arrivals: BinaryHeap::new(),
            id_prefix,
            batch: Vec::new(),
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Transactions emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn pick_user(&mut self, ts: i64) -> usize {
        let hour = (ts.rem_euclid(86_400_000_000) as f64) / 3_600_000_000.0;
        let mut u = 0;
        for _ in 0..16 {
            u = self
                .activity
                .sample(&mut self.rng)
                .min(self.users.len() - 1);
            if self.rng.random::<f64>() < self.users[u].rhythm(hour) {
                break;
            }
        }
        u
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn make(&mut self, ts: i64, user: usize, d: Draft) -> Event {
        let Draft {
            amount,
            category,
            merchant,
            city,
            channel,
            device,
            pattern,
        } = d;
        self.tx_seq += 1;
        let seq = self.tx_seq;
        let u = &self.users[user];
        let (lat, lon, city) = match city {
            Some(c) => {
                let (_, _, _, la, lo) = CITIES[c];
                (la, lo, c)
            }
            None => (u.lat, u.lon, u.city()),
        };
        Event {
            ts_micros: ts,
            seq,
            user: user as u32,
            amount: amount.max(0.01),
            category: category as u8,
            merchant,
            city: city as u8,
            lat: (lat * 1e4).round() / 1e4,
            lon: (lon * 1e4).round() / 1e4,
            channel,
            device: device.unwrap_or_else(|| u.device(seq as usize)),
            pattern,
        }
    }

    /// The transaction of `e` with its text fields formatted (the JSON output).
    pub fn describe(&self, e: &Event) -> Generated {
        Generated {
            ts_micros: e.ts_micros,
            pattern: e.pattern,
            transaction: Transaction {
                transaction_id: text(|s| e.write_transaction_id(&self.id_prefix, s)),
                user_id: text(|s| e.write_user_id(s)),
                amount: e.amount,
                timestamp: format_micros(e.ts_micros),
                currency: Some(e.currency().to_string()),
                merchant: Some(text(|s| e.write_merchant(s))),
                category: Some(e.category().to_string()),
                location: Some(e.location().to_string()),
                country: Some(e.country().to_string()),
                device_id: Some(text(|s| e.write_device(s))),
                channel: Some(e.channel.to_string()),
                lat: Some(e.lat),
                lon: Some(e.lon),
                is_fraud: Some(e.pattern.is_some()),
                fraud_pattern: e.pattern.map(|p| p.name().to_string()),
            },
        }
    }

    fn normal(&mut self, ts: i64, user: usize) -> Event {
        let u = &self.users[user];
        let category = u.draw_category(&mut self.rng, &mut self.replay);
        let amount = u.draw_amount(&mut self.rng);
        let n = if category < RISKY_FROM && self.rng.random::<f64>() < 0.6 {
            u16::from(u.favourite_merchants[category])
        } else {
            self.rng.random_range(0..MERCHANTS_PER_CATEGORY) as u16
        };
        let merchant = Merchant::Regular(n);
        let r = self.rng.random::<f64>();
        let channel = if r < 0.7 {
            "pos"
        } else if r < 0.95 {
            "online"
        } else {
            "atm"
        };
        self.make(
            ts,
            user,
            Draft {
                amount,
                category,
                merchant,
                city: None,
                channel,
                device: None,
                pattern: None,
            },
        )
    }

    /// Plans a fraud episode starting at `ts` for a random user.
    fn plan_episode(&mut self, ts: i64) {
        let user = self.rng.random_range(0..self.users.len());
        let minute = 60_000_000i64;
        let plan = |me: &mut Self, t: i64, kind| {
            let seq = me.next_seq();
            me.planned.push(Reverse(Planned {
                ts: t,
                seq,
                user,
                kind,
            }));
        };
        match self.rng.random_range(0..5) {
            0 => plan(self, ts, PlannedKind::Spike),
            1 => {
                let n = self.rng.random_range(6..=15);
                let span = self.rng.random_range(2..=10) * minute;
                for i in 0..n {
                    plan(self, ts + span * i / n, PlannedKind::Burst);
                }
            }
            2 => {
                let home = self.users[user].city();
                let (_, _, _, hl, ho) = CITIES[home];
                let far: Vec<usize> = (0..CITIES.len())
                    .filter(|&c| {
                        let (_, _, _, la, lo) = CITIES[c];
                        haversine_km(hl, ho, la, lo) >= 3000.0
                    })
                    .collect();
                let dest = far[self.rng.random_range(0..far.len())];
                plan(self, ts, PlannedKind::HomeBeforeTravel);
                let gap = self.rng.random_range(5..=30) * minute;
                plan(self, ts + gap, PlannedKind::FarAway(dest));
            }
            3 => {
                // Next 01:00–05:00 UTC.
                let day = 86_400_000_000i64;
                let start_of_day = ts - ts.rem_euclid(day);
                let mut t =
                    start_of_day + self.rng.random_range(3_600_000_000i64..5 * 3_600_000_000);
                if t <= ts {
                    t += day;
                }
                plan(self, t, PlannedKind::OddHour);
            }
            _ => {
                let n = self.rng.random_range(8..=25);
                let span = self.rng.random_range(1..=5) * minute;
                let tag = self.rng.random::<u32>();
                for i in 0..n {
                    plan(self, ts + span * i / n, PlannedKind::CardTest(tag));
                }
            }
        }
    }

    /// A fraudulent purchase of `user`: `factor` times their typical amount at a random
    /// merchant of `category`.
    fn fraud(
        &mut self,
        p: &Planned,
        category: usize,
        factor: std::ops::Range<f64>,
        city: Option<usize>,
        channel: &'static str,
        pattern: FraudPattern,
    ) -> Event {
        let typical = self.users[p.user].typical_amount();
        let amount = (typical * self.rng.random_range(factor) * 100.0).round() / 100.0;
        let merchant = Merchant::Regular(self.rng.random_range(0..MERCHANTS_PER_CATEGORY) as u16);
        self.make(
            p.ts,
            p.user,
            Draft {
                amount,
                category,
                merchant,
                city,
                channel,
                device: None,
                pattern: Some(pattern),
            },
        )
    }

    fn realise(&mut self, p: Planned) -> Event {
        let usual = self.users[p.user].draw_category(&mut self.rng, &mut self.replay);
        match p.kind {
            PlannedKind::Spike => self.fraud(
                &p,
                usual,
                8.0..40.0,
                None,
                "online",
                FraudPattern::AmountSpike,
            ),
            PlannedKind::Burst => self.fraud(
                &p,
                usual,
                0.5..2.5,
                None,
                "pos",
                FraudPattern::VelocityBurst,
            ),
            PlannedKind::HomeBeforeTravel => self.normal(p.ts, p.user),
            PlannedKind::FarAway(city) => self.fraud(
                &p,
                usual,
                1.0..6.0,
                Some(city),
                "pos",
                FraudPattern::ImpossibleTravel,
            ),
            PlannedKind::OddHour => {
                let risky = self.rng.random_range(RISKY_FROM..CATEGORIES.len());
                self.fraud(
                    &p,
                    risky,
                    3.0..12.0,
                    None,
                    "online",
                    FraudPattern::OddHourCategory,
                )
            }
            PlannedKind::CardTest(tag) => {
                let amount = (self.rng.random_range(0.5..3.0) * 100.0f64).round() / 100.0;
                self.make(
                    p.ts,
                    p.user,
                    Draft {
                        amount,
                        category: 4, // online_retail
                        merchant: Merchant::CardTest((tag % 997) as u16),
                        city: None,
                        channel: "online",
                        device: Some(tag),
                        pattern: Some(FraudPattern::CardTesting),
                    },
                )
            }
        }
    }

    /// The next event in event-time order (before arrival delays).
    fn next_in_event_time(&mut self) -> Event {
        if let Some(Reverse(p)) = self.planned.peek().copied()
            && p.ts <= self.clock
        {
            self.planned.pop();
            return self.realise(p);
        }
        let ts = self.clock;
        let gap = -(1.0 - self.rng.random::<f64>()).ln() / self.cfg.events_per_second;
        self.clock += (gap * 1e6).round().max(1.0) as i64;
        if self.rng.random::<f64>() < self.cfg.fraud_rate {
            self.plan_episode(ts);
            if let Some(Reverse(p)) = self.planned.peek().copied()
                && p.ts <= ts
            {
                self.planned.pop();
                return self.realise(p);
            }
        }
        let user = self.pick_user(ts);
        self.normal(ts, user)
    }
}

impl Generator {
    /// The next transaction in arrival order, compact.
    pub fn next_event(&mut self) -> Option<Event> {
        if self.cfg.count.is_some_and(|c| self.emitted >= c) {
            return None;
        }
        loop {
            // An event whose arrival time has come goes out first.
            let horizon = self.horizon();
            if let Some(Reverse(a)) = self.arrivals.peek()
                && a.arrival <= horizon
            {
                let Some(Reverse(a)) = self.arrivals.pop() else {
                    continue;
                };
                self.emitted += 1;
                return Some(a.event);
            }
            let event = self.next_in_event_time();
            let delay = if self.rng.random::<f64>() < self.cfg.out_of_order {
                self.rng
                    .random_range(0..=self.cfg.max_delay_ms as i64 * 1000)
            } else {
                0
            };
            let seq = self.next_seq();
            let arrival = event.ts_micros + delay;
            // What pushing it and taking the heap's first would do, without the heap: it is
            // due and comes before every waiting event (theirs have smaller `seq`).
            if arrival <= self.horizon()
                && self
                    .arrivals
                    .peek()
                    .is_none_or(|Reverse(a)| arrival < a.arrival)
            {
                self.emitted += 1;
                return Some(event);
            }
            self.arrivals.push(Reverse(Arrival {
                arrival,
                seq,
                event,
            }));
        }
    }

    /// Event time up to which arrivals are due: nothing generated later can arrive earlier.
    fn horizon(&self) -> i64 {
        self.planned
            .peek()
            .map_or(self.clock, |Reverse(p)| p.ts.min(self.clock))
    }
}

impl Iterator for Generator {
    type Item = Generated;

    /// The next transaction in arrival order.
    fn next(&mut self) -> Option<Generated> {
        let e = self.next_event()?;
        Some(self.describe(&e))
    }
}

#[cfg(test)]
mod tests;
