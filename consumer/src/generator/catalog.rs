//! The data tables the generator draws from: the site's and app's pages, the product's
//! features, and the user agents, locales, referrers, campaigns, names, email domains,
//! plans and traits visitors come with.
//!
//! Tables with repeated entries (locales, plans) weight those entries: the generator picks
//! uniformly from each table. Order matters too: a pick is an index, so reordering a table
//! changes the generated lines.

/// Origin of every page URL.
const BASE_URL: &str = "https://onramp.example";

/// A page of the site or app.
#[derive(Debug)]
pub(super) struct Page {
    pub(super) path: &'static str,
    pub(super) title: &'static str,
    /// The navigation link that leads to it.
    pub(super) nav: &'static str,
}

impl Page {
    /// The page's full URL, without a query.
    pub(super) fn url(&self) -> String {
        format!("{BASE_URL}{}", self.path)
    }
}

const fn page(path: &'static str, title: &'static str, nav: &'static str) -> Page {
    Page { path, title, nav }
}

/// The public site: where visitors land and what they browse before signing up (and all
/// that bots crawl).
pub(super) static LANDING_PAGES: [Page; 5] = [
    page("/", "onramp - onboarding analytics", "nav_home"),
    page("/pricing", "Pricing", "nav_pricing"),
    page("/features", "Features", "nav_features"),
    page(
        "/blog/activation-metrics",
        "Five activation metrics that matter",
        "nav_blog",
    ),
    page("/customers", "Customers", "nav_customers"),
];
/// The pages of the funnel's steps, and the app's home.
pub(super) static SIGNUP_PAGE: Page = page("/signup", "Create your account", "cta_signup");
pub(super) static VERIFY_PAGE: Page = page("/onboarding/verify", "Check your inbox", "nav_verify");
pub(super) static PROFILE_PAGE: Page = page("/onboarding/profile", "About you", "nav_profile");
pub(super) static WORKSPACE_PAGE: Page = page("/onboarding/workspace", "Create your workspace", "nav_workspace");
pub(super) static INVITE_PAGE: Page = page("/onboarding/invite", "Invite your team", "nav_invite");
pub(super) static APP_HOME: Page = page("/app", "Home", "nav_app");

/// A product feature and its page.
#[derive(Debug)]
pub(super) struct Feature {
    pub(super) name: &'static str,
    pub(super) page: Page,
}

/// The features a visitor tries during and after onboarding (`feature_used`).
pub(super) static FEATURES: [Feature; 5] = [
    Feature {
        name: "dashboards",
        page: page("/app/dashboards", "Dashboards", "nav_dashboards"),
    },
    Feature {
        name: "funnels",
        page: page("/app/funnels", "Funnels", "nav_funnels"),
    },
    Feature {
        name: "segments",
        page: page("/app/segments", "Segments", "nav_segments"),
    },
    Feature {
        name: "alerts",
        page: page("/app/alerts", "Alerts", "nav_alerts"),
    },
    Feature {
        name: "csv_export",
        page: page("/app/exports", "Exports", "nav_exports"),
    },
];

/// Real browsers: desktop, mobile and tablet.
pub(super) static USER_AGENTS: [&str; 10] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
];

/// Crawlers and scripts; each matches one of validate's default bot patterns.
pub(super) static BOT_USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "python-requests/2.32.3",
    "curl/8.5.0",
];

/// Locales as clients send them (some not normalised).
pub(super) static LOCALES: [&str; 10] = [
    "en-US", "en-US", "en-US", "en_us", "en-GB", "de-DE", "fr", "pt_br", "es-419", "ja-JP",
];

/// Referrers of a landing page view.
pub(super) static REFERRERS: [&str; 6] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://www.linkedin.com/",
    "https://t.co/x9Ab3",
    "https://duckduckgo.com/",
    "https://github.com/",
];

/// UTM parameters of a landing URL: (utm_source, utm_medium, utm_campaign).
pub(super) static CAMPAIGNS: [(&str, &str, &str); 6] = [
    ("google", "cpc", "brand_search"),
    ("newsletter", "email", "nov_digest"),
    ("linkedin", "social", "launch_week"),
    ("twitter", "social", "launch_week"),
    ("producthunt", "referral", "ph_launch"),
    ("partner_acme", "affiliate", "q4_partners"),
];

/// Local parts of sign-up emails (`<name>.<n>@<domain>`).
pub(super) static FIRST_NAMES: [&str; 10] = [
    "maria", "li", "ahmed", "sofia", "john", "priya", "kenji", "olga", "diego", "fatima",
];
/// Domains of sign-up emails.
pub(super) static EMAIL_DOMAINS: [&str; 7] = [
    "gmail.com",
    "outlook.com",
    "acme.io",
    "globex.com",
    "initech.io",
    "hey.com",
    "proton.me",
];
/// `sign_up` methods.
pub(super) static SIGN_UP_METHODS: [&str; 3] = ["email", "google", "github"];
/// Plans chosen at sign-up (and the `plan` trait).
pub(super) static PLANS: [&str; 3] = ["free", "free", "team_trial"];
/// `role` traits of `identify`.
pub(super) static ROLES: [&str; 5] = ["engineer", "product", "marketing", "founder", "operations"];
/// `company_size` traits of `identify`.
pub(super) static COMPANY_SIZES: [&str; 5] = ["1-10", "11-50", "51-200", "201-1000", "1000+"];
/// Roles of `invite_sent`.
pub(super) static INVITE_ROLES: [&str; 2] = ["member", "admin"];
