//! The generator's synthetic world: cities, spending categories, and users with their own
//! spending profiles, home locations, merchants, devices and daily rhythms.

use rand::Rng;
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
/// Merchants per category.
pub const MERCHANTS_PER_CATEGORY: usize = 200;

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// One card holder.
/// A card holder. Kept small and free of heap allocations (a million users is a normal
/// benchmark): ids and device names are formatted when a transaction needs them.
pub struct User {
    /// The user's number; [`User::id`] is `u` and six digits of it.
    pub index: u32,
    pub city: usize,
    pub lat: f64,
    pub lon: f64,
    /// Log-normal parameters of the user's amounts.
    pub mu: f64,
    pub sigma: f64,
    /// Median amount, `exp(mu)`.
    pub typical_amount: f64,
    /// Relative number of transactions per day.
    pub activity: f64,
    /// Hour of day (UTC) the user is most active.
    pub peak_hour: f64,
    /// Cumulative category weights (last entry = total).
    pub category_cdf: [f64; CATEGORIES.len()],
    /// The user's usual merchant in each everyday category.
    pub favourite_merchants: [u16; RISKY_FROM],
    /// The user's devices (the first `n_devices` are used).
    devices: [u32; 2],
    n_devices: u8,
}

impl User {
    pub fn new(index: usize, rng: &mut impl Rng) -> User {
        let city = rng.random_range(0..CITIES.len());
        let (_, _, _, lat, lon) = CITIES[city];
        let z: f64 = rng.sample(StandardNormal);
        let mu = 3.4 + 0.7 * z;
        let sigma = rng.random_range(0.35..0.8);
        let mut weights = [0.0f64; CATEGORIES.len()];
        for w in weights.iter_mut().take(RISKY_FROM) {
            *w = rng.random::<f64>().powi(3) + 0.01;
        }
        weights[0] += 1.0; // everyone buys groceries
        // Occasional electronics, almost never the rest of the risky categories.
        weights[RISKY_FROM] = 0.02;
        let favourite_merchants =
            std::array::from_fn(|_| rng.random_range(0..MERCHANTS_PER_CATEGORY) as u16);
        let n_devices: u8 = rng.random_range(1..=2);
        let mut devices = [0u32; 2];
        for d in devices.iter_mut().take(usize::from(n_devices)) {
            *d = rng.random::<u32>();
        }
        let mut category_cdf = [0.0; CATEGORIES.len()];
        let mut acc = 0.0;
        for (c, w) in category_cdf.iter_mut().zip(&weights) {
            acc += w;
            *c = acc;
        }
        User {
            index: index as u32,
            city,
            lat: lat + rng.random_range(-0.05..0.05),
            lon: lon + rng.random_range(-0.05..0.05),
            mu,
            sigma,
            typical_amount: mu.exp(),
            activity: (0.8 * rng.sample::<f64, _>(StandardNormal)).exp(),
            peak_hour: rng.random_range(7.0..22.0),
            category_cdf,
            favourite_merchants,
            devices,
            n_devices,
        }
    }

    /// The user's id, e.g. `u000042`.
    pub fn id(&self) -> String {
        format!("u{:06}", self.index)
    }

    /// The user's `k`-th device (cycling through the ones they have), e.g. `d1a2b3c4d`.
    pub fn device(&self, k: usize) -> String {
        let n = usize::from(self.n_devices.max(1));
        format!("d{:08x}", self.devices[k % n])
    }

    /// A typical amount for this user, rounded to cents.
    pub fn draw_amount(&self, rng: &mut impl Rng) -> f64 {
        let z: f64 = rng.sample(StandardNormal);
        ((self.mu + self.sigma * z).exp() * 100.0).round() / 100.0
    }

    /// A category index drawn from the user's preferences.
    pub fn draw_category(&self, rng: &mut impl Rng) -> usize {
        let total = self.category_cdf.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        self.category_cdf
            .partition_point(|&c| c <= x)
            .min(CATEGORIES.len() - 1)
    }

    /// Probability the user transacts at `hour` (UTC), relative to their peak.
    pub fn rhythm(&self, hour: f64) -> f64 {
        let d = (hour - self.peak_hour).abs();
        let d = d.min(24.0 - d);
        0.05 + 0.95 * (-(d * d) / (2.0 * 3.5 * 3.5)).exp()
    }
}
