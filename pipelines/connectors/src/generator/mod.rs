//! `generator` source: synthetic card / e-commerce transactions following the event contract,
//! with labelled fraud patterns injected (`is_fraud = true`):
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

mod options;
mod source;
mod world;

pub use options::{SPEC, config_from, pace_from};
pub use source::{GeneratorSource, to_batch};

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;
use txguard_engine::event::{Transaction, format_micros};

pub use world::{CATEGORIES, CITIES, haversine_km};
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
    merchant: String,
    city: Option<usize>,
    channel: &'static str,
    device: Option<String>,
    pattern: Option<FraudPattern>,
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
    /// Boxed: the heap moves 24-byte entries, not whole transactions.
    event: Box<Generated>,
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
    users: Vec<User>,
    /// Users weighted by activity, sampled in O(1) (a million users is a normal benchmark).
    activity: WeightedAliasIndex<f64>,
    clock: i64,
    seq: u64,
    tx_seq: u64,
    emitted: u64,
    planned: BinaryHeap<Reverse<Planned>>,
    arrivals: BinaryHeap<Reverse<Arrival>>,
    /// Whether `Transaction::timestamp` is filled in (JSON output needs it; Arrow output
    /// uses `ts_micros`).
    text_timestamps: bool,
}

impl Generator {
    pub fn new(cfg: GeneratorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let users: Vec<User> = (0..cfg.users).map(|i| User::new(i, &mut rng)).collect();
        let activity = WeightedAliasIndex::new(users.iter().map(|u| u.activity).collect())
            .map_err(|e| ConfigError {
                option: "users",
                message: format!("cannot weight the users by activity: {e}"),
            })?;
        Ok(Generator {
            clock: cfg.start_micros,
            cfg,
            rng,
            users,
            activity,
            seq: 0,
            tx_seq: 0,
            emitted: 0,
            planned: BinaryHeap::new(),
            arrivals: BinaryHeap::new(),
            text_timestamps: true,
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Leave `Transaction::timestamp` empty (formatting it is a good part of the cost of an
    /// event; Arrow output reads `ts_micros`).
    pub fn without_text_timestamps(mut self) -> Self {
        self.text_timestamps = false;
        self
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

    fn make(&mut self, ts: i64, user: usize, d: Draft) -> Generated {
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
            None => (u.lat, u.lon, u.city),
        };
        let (name, country, currency, _, _) = CITIES[city];
        let device = device.unwrap_or_else(|| u.device(seq as usize));
        Generated {
            ts_micros: ts,
            pattern,
            transaction: Transaction {
                transaction_id: format!("tx-{:x}-{seq}", self.cfg.seed),
                user_id: u.id(),
                amount: amount.max(0.01),
                timestamp: if self.text_timestamps {
                    format_micros(ts)
                } else {
                    String::new()
                },
                currency: Some(currency.to_string()),
                merchant: Some(merchant),
                category: Some(CATEGORIES[category].to_string()),
                location: Some(name.to_string()),
                country: Some(country.to_string()),
                device_id: Some(device),
                channel: Some(channel.to_string()),
                lat: Some((lat * 1e4).round() / 1e4),
                lon: Some((lon * 1e4).round() / 1e4),
                is_fraud: Some(pattern.is_some()),
            },
        }
    }

    fn normal(&mut self, ts: i64, user: usize) -> Generated {
        let u = &self.users[user];
        let category = u.draw_category(&mut self.rng);
        let amount = u.draw_amount(&mut self.rng);
        let merchant = if category < RISKY_FROM && self.rng.random::<f64>() < 0.6 {
            format!(
                "m-{}-{}",
                CATEGORIES[category], u.favourite_merchants[category]
            )
        } else {
            format!(
                "m-{}-{}",
                CATEGORIES[category],
                self.rng.random_range(0..MERCHANTS_PER_CATEGORY)
            )
        };
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
                let home = self.users[user].city;
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
    ) -> Generated {
        let typical = self.users[p.user].typical_amount;
        let amount = (typical * self.rng.random_range(factor) * 100.0).round() / 100.0;
        let merchant = format!(
            "m-{}-{}",
            CATEGORIES[category],
            self.rng.random_range(0..MERCHANTS_PER_CATEGORY)
        );
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

    fn realise(&mut self, p: Planned) -> Generated {
        let usual = self.users[p.user].draw_category(&mut self.rng);
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
                        category: 4,
                        merchant: format!("m-online_retail-t{}", tag % 997),
                        city: None,
                        channel: "online",
                        device: Some(format!("d{tag:08x}")),
                        pattern: Some(FraudPattern::CardTesting),
                    },
                )
            }
        }
    }

    /// The next event in event-time order (before arrival delays).
    fn next_in_event_time(&mut self) -> Generated {
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

impl Iterator for Generator {
    type Item = Generated;

    /// The next transaction in arrival order.
    fn next(&mut self) -> Option<Generated> {
        if self.cfg.count.is_some_and(|c| self.emitted >= c) {
            return None;
        }
        loop {
            // An event whose arrival time has come goes out first.
            let horizon = self
                .planned
                .peek()
                .map_or(self.clock, |Reverse(p)| p.ts.min(self.clock));
            if let Some(Reverse(a)) = self.arrivals.peek()
                && a.arrival <= horizon
            {
                let Some(Reverse(a)) = self.arrivals.pop() else {
                    continue;
                };
                self.emitted += 1;
                return Some(*a.event);
            }
            let event = self.next_in_event_time();
            let delay = if self.rng.random::<f64>() < self.cfg.out_of_order {
                self.rng
                    .random_range(0..=self.cfg.max_delay_ms as i64 * 1000)
            } else {
                0
            };
            let seq = self.next_seq();
            self.arrivals.push(Reverse(Arrival {
                arrival: event.ts_micros + delay,
                seq,
                event: Box::new(event),
            }));
        }
    }
}

#[cfg(test)]
mod tests;
