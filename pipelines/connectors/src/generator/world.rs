//! The generator's synthetic world: cities, spending categories, and users with their own
//! spending profiles, home locations, merchants, devices and daily rhythms.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// (name, country, currency, lat, lon)
pub const CITIES: [(&str, &str, &str, f64, f64); 24] = [
    ("New York", "US", "USD", 40.71, -74.01),
    ("Chicago", "US", "USD", 41.88, -87.63),
    ("Los Angeles", "US", "USD", 34.05, -118.24),
    ("Toronto", "CA", "CAD", 43.65, -79.38),
    ("Mexico City", "MX", "MXN", 19.43, -99.13),
    ("Sao Paulo", "BR", "BRL", -23.55, -46.63),
    ("London", "GB", "GBP", 51.51, -0.13),
    ("Paris", "FR", "EUR", 48.86, 2.35),
    ("Berlin", "DE", "EUR", 52.52, 13.40),
    ("Madrid", "ES", "EUR", 40.42, -3.70),
    ("Milan", "IT", "EUR", 45.46, 9.19),
    ("Amsterdam", "NL", "EUR", 52.37, 4.90),
    ("Stockholm", "SE", "SEK", 59.33, 18.07),
    ("Warsaw", "PL", "PLN", 52.23, 21.01),
    ("Istanbul", "TR", "TRY", 41.01, 28.98),
    ("Dubai", "AE", "AED", 25.20, 55.27),
    ("Mumbai", "IN", "INR", 19.08, 72.88),
    ("Singapore", "SG", "SGD", 1.35, 103.82),
    ("Hong Kong", "HK", "HKD", 22.32, 114.17),
    ("Tokyo", "JP", "JPY", 35.68, 139.69),
    ("Seoul", "KR", "KRW", 37.57, 126.98),
    ("Sydney", "AU", "AUD", -33.87, 151.21),
    ("Johannesburg", "ZA", "ZAR", -26.20, 28.05),
    ("Lagos", "NG", "NGN", 6.52, 3.38),
];

/// Spending categories; the last four are what fraudsters favour.
pub const CATEGORIES: [&str; 14] = [
    "groceries",
    "restaurants",
    "fuel",
    "transport",
    "online_retail",
    "pharmacy",
    "utilities",
    "clothing",
    "entertainment",
    "travel",
    "electronics",
    "jewelry",
    "gift_cards",
    "crypto",
];
/// Index of the first category fraudsters favour.
pub const RISKY_FROM: usize = 10;
/// Merchants per category (a user's favourites are kept as `u8`).
pub const MERCHANTS_PER_CATEGORY: usize = 200;
const _: () = assert!(MERCHANTS_PER_CATEGORY <= 256);

/// Steps of the quantised category CDF a user keeps (its exact values are drawn again from
/// the random stream when a draw falls too close to a step to tell).
const CDF_STEPS: f64 = 65536.0;

/// Cumulative category weights drawn from `rng`: random everyday weights (groceries for
/// everyone), occasional electronics, never the other risky categories.
fn category_cdf(rng: &mut ChaCha8Rng) -> [f64; RISKY_FROM + 1] {
    let mut weights = [0.0f64; RISKY_FROM + 1];
    for w in weights.iter_mut().take(RISKY_FROM) {
        *w = rng.random::<f64>().powi(3) + 0.01;
    }
    weights[0] += 1.0;
    weights[RISKY_FROM] = 0.02;
    let mut cdf = [0.0; RISKY_FROM + 1];
    let mut acc = 0.0;
    for (c, w) in cdf.iter_mut().zip(&weights) {
        acc += w;
        *c = acc;
    }
    cdf
}

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// A card holder. Kept small and free of heap allocations (a million users is a normal
/// benchmark): the user's number is its index in the generator's list, and ids and device
/// names are formatted when a transaction needs them.
pub struct User {
    pub lat: f64,
    pub lon: f64,
    /// Log-normal parameters of the user's amounts.
    pub mu: f64,
    pub sigma: f64,
    /// Hour of day (UTC) the user is most active.
    pub peak_hour: f64,
    /// Sum of the category weights (the everyday ones and electronics; the other risky
    /// categories weigh nothing).
    category_total: f64,
    /// Where in the generator's random stream (ChaCha word position) the weights were drawn.
    weights_at: u64,
    /// The cumulative weights of the everyday categories as steps of `total / CDF_STEPS`,
    /// rounded down: 20 bytes instead of the 88 of the exact CDF.
    category_steps: [u16; RISKY_FROM],
    /// The user's usual merchant in each everyday category.
    pub favourite_merchants: [u8; RISKY_FROM],
    /// The user's devices (the first `n_devices` are used).
    devices: [u32; 2],
    n_devices: u8,
    city: u8,
}

// A million users is 96 MB.
const _: () = assert!(std::mem::size_of::<User>() <= 96);

impl User {
    /// A new user and their relative number of transactions per day.
    pub fn new(rng: &mut ChaCha8Rng) -> (User, f64) {
        let city = rng.random_range(0..CITIES.len());
        let (_, _, _, lat, lon) = CITIES[city];
        let z: f64 = rng.sample(StandardNormal);
        let mu = 3.4 + 0.7 * z;
        let sigma = rng.random_range(0.35..0.8);
        let weights_at = rng.get_word_pos() as u64;
        let category_cdf = category_cdf(rng);
        let category_total = category_cdf[RISKY_FROM];
        let category_steps =
            std::array::from_fn(|i| (category_cdf[i] / category_total * CDF_STEPS).floor() as u16);
        let favourite_merchants =
            std::array::from_fn(|_| rng.random_range(0..MERCHANTS_PER_CATEGORY) as u8);
        let n_devices: u8 = rng.random_range(1..=2);
        let mut devices = [0u32; 2];
        for d in devices.iter_mut().take(usize::from(n_devices)) {
            *d = rng.random::<u32>();
        }
        // The draws in this order (the generator's output depends on it).
        let lat = lat + rng.random_range(-0.05..0.05);
        let lon = lon + rng.random_range(-0.05..0.05);
        let activity = (0.8 * rng.sample::<f64, _>(StandardNormal)).exp();
        let peak_hour = rng.random_range(7.0..22.0);
        let user = User {
            lat,
            lon,
            mu,
            sigma,
            peak_hour,
            category_total,
            weights_at,
            category_steps,
            favourite_merchants,
            devices,
            n_devices,
            city: city as u8,
        };
        (user, activity)
    }

    /// Index of the user's home city in [`CITIES`].
    pub fn city(&self) -> usize {
        usize::from(self.city)
    }

    /// Median amount, `exp(mu)`.
    pub fn typical_amount(&self) -> f64 {
        self.mu.exp()
    }

    /// The user's `k`-th device (cycling through the ones they have); its id is `d` and
    /// eight hex digits of it.
    pub fn device(&self, k: usize) -> u32 {
        let n = usize::from(self.n_devices.max(1));
        self.devices[k % n]
    }

    /// A typical amount for this user, rounded to cents.
    pub fn draw_amount(&self, rng: &mut impl Rng) -> f64 {
        let z: f64 = rng.sample(StandardNormal);
        ((self.mu + self.sigma * z).exp() * 100.0).round() / 100.0
    }

    /// A category index drawn from the user's preferences. `replay` is a generator of the
    /// same seed as the one that made the user: it redraws the exact weights when the steps
    /// cannot tell (about one draw in 2000).
    pub fn draw_category(&self, rng: &mut impl Rng, replay: &mut ChaCha8Rng) -> usize {
        let x = rng.random::<f64>() * self.category_total;
        self.category_for(x, replay)
    }

    /// The category at `x` in `0..=total` of the user's cumulative weights.
    fn category_for(&self, x: f64, replay: &mut ChaCha8Rng) -> usize {
        let total = self.category_total;
        let step = (x / total * CDF_STEPS).floor();
        // How many cumulative weights are <= x; a step of rounding either side is certain.
        let mut below = 0;
        for &s in &self.category_steps {
            let s = f64::from(s);
            if step > s + 1.0 {
                below += 1;
            } else if step + 1.0 < s {
                break;
            } else {
                replay.set_word_pos(u128::from(self.weights_at));
                let cdf = category_cdf(replay);
                below = cdf.partition_point(|&c| c <= x);
                break;
            }
        }
        if below == RISKY_FROM && total <= x {
            below += 1;
        }
        // At or past the total: the last category, as a CDF over all of them (the weightless
        // ones repeating the total) would say.
        if below == RISKY_FROM + 1 {
            CATEGORIES.len() - 1
        } else {
            below
        }
    }

    /// Probability the user transacts at `hour` (UTC), relative to their peak.
    pub fn rhythm(&self, hour: f64) -> f64 {
        let d = (hour - self.peak_hour).abs();
        let d = d.min(24.0 - d);
        0.05 + 0.95 * (-(d * d) / (2.0 * 3.5 * 3.5)).exp()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The quantised steps (with their exact redraws) pick the category the exact CDF picks,
    /// including the draws that land next to a step.
    #[test]
    fn category_draws_equal_the_exact_cdf() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let users: Vec<User> = (0..500).map(|_| User::new(&mut rng).0).collect();
        let mut replay = ChaCha8Rng::seed_from_u64(7);
        let mut exact_rng = ChaCha8Rng::seed_from_u64(7);
        let (mut draws, mut near_a_step) = (ChaCha8Rng::seed_from_u64(99), 0);
        for u in &users {
            exact_rng.set_word_pos(u128::from(u.weights_at));
            let cdf = category_cdf(&mut exact_rng);
            let exact = |x: f64| match cdf.partition_point(|&c| c <= x) {
                i if i == cdf.len() => CATEGORIES.len() - 1,
                i => i,
            };
            for _ in 0..400 {
                let mut probe = draws.clone();
                let x = probe.random::<f64>() * u.category_total;
                assert_eq!(u.draw_category(&mut draws, &mut replay), exact(x));
            }
            // Right at each cumulative weight and one ulp either side.
            for &c in &cdf {
                for x in [c.next_down(), c, c.next_up()] {
                    near_a_step += 1;
                    let r = x / u.category_total;
                    let got = u.category_for(r * u.category_total, &mut replay);
                    assert_eq!(got, exact(r * u.category_total), "x = {x}");
                }
            }
        }
        assert!(near_a_step > 0);
    }
}
