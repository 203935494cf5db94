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
    /// Cumulative weights of the everyday categories and of electronics; the other risky
    /// categories weigh nothing, so the last entry is the total.
    category_cdf: [f64; RISKY_FROM + 1],
    /// The user's usual merchant in each everyday category.
    pub favourite_merchants: [u16; RISKY_FROM],
    /// The user's devices (the first `n_devices` are used).
    devices: [u32; 2],
    n_devices: u8,
    city: u8,
}

impl User {
    /// A new user and their relative number of transactions per day.
    pub fn new(rng: &mut impl Rng) -> (User, f64) {
        let city = rng.random_range(0..CITIES.len());
        let (_, _, _, lat, lon) = CITIES[city];
        let z: f64 = rng.sample(StandardNormal);
        let mu = 3.4 + 0.7 * z;
        let sigma = rng.random_range(0.35..0.8);
        let mut weights = [0.0f64; RISKY_FROM + 1];
        for w in weights.iter_mut().take(RISKY_FROM) {
            *w = rng.random::<f64>().powi(3) + 0.01;
        }
        weights[0] += 1.0; // everyone buys groceries
        // Occasional electronics, never the rest of the risky categories.
        weights[RISKY_FROM] = 0.02;
        let favourite_merchants =
            std::array::from_fn(|_| rng.random_range(0..MERCHANTS_PER_CATEGORY) as u16);
        let n_devices: u8 = rng.random_range(1..=2);
        let mut devices = [0u32; 2];
        for d in devices.iter_mut().take(usize::from(n_devices)) {
            *d = rng.random::<u32>();
        }
        let mut category_cdf = [0.0; RISKY_FROM + 1];
        let mut acc = 0.0;
        for (c, w) in category_cdf.iter_mut().zip(&weights) {
            acc += w;
            *c = acc;
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
            category_cdf,
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

    /// A category index drawn from the user's preferences.
    pub fn draw_category(&self, rng: &mut impl Rng) -> usize {
        let total = self.category_cdf.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        // At or past the total: the last category, as a CDF over all of them (the weightless
        // ones repeating the total) would say.
        match self.category_cdf.partition_point(|&c| c <= x) {
            i if i == self.category_cdf.len() => CATEGORIES.len() - 1,
            i => i,
        }
    }

    /// Probability the user transacts at `hour` (UTC), relative to their peak.
    pub fn rhythm(&self, hour: f64) -> f64 {
        let d = (hour - self.peak_hour).abs();
        let d = d.min(24.0 - d);
        0.05 + 0.95 * (-(d * d) / (2.0 * 3.5 * 3.5)).exp()
    }
}
