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
pub struct User {
    pub id: String,
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
    pub category_cdf: Vec<f64>,
    /// The user's usual merchant in each everyday category.
    pub favourite_merchants: [usize; RISKY_FROM],
    pub devices: Vec<String>,
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
            std::array::from_fn(|_| rng.random_range(0..MERCHANTS_PER_CATEGORY));
        let devices = (0..rng.random_range(1..=2))
            .map(|_| format!("d{:08x}", rng.random::<u32>()))
            .collect();
        User {
            id: format!("u{index:06}"),
            city,
            lat: lat + rng.random_range(-0.05..0.05),
            lon: lon + rng.random_range(-0.05..0.05),
            mu,
            sigma,
            typical_amount: mu.exp(),
            activity: (0.8 * rng.sample::<f64, _>(StandardNormal)).exp(),
            peak_hour: rng.random_range(7.0..22.0),
            category_cdf: weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect(),
            favourite_merchants,
            devices,
        }
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
