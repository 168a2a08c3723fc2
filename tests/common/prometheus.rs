//! Scraping `GET /metrics` and reading the Prometheus text it answers.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};

use super::TestServer;

/// The samples of a Prometheus text exposition: `(name, labels) → value`.
pub struct Scrape(pub Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closed labels");
                    let labels = rest
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                            (key.to_string(), value.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Self(samples)
    }

    /// The value of the one series of `name` that has all of `labels`;
    /// fails the test if there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    /// The value of the one series of `name` that has all of `labels`, if
    /// there is one (a counter not yet counted has none).
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
            .collect();
        assert!(matching.len() <= 1, "{name} {labels:?} is ambiguous");
        matching.first().copied()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

pub async fn scrape(server: &TestServer) -> Scrape {
    let resp = server.bare(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(&resp.text().await.unwrap())
}

/// Metered size of a record with a body and no headers (as S2 meters).
pub fn metered(body: &str) -> f64 {
    (8 + body.len()) as f64
}
