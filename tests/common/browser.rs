//! A real browser for the console's tests: headless Chromium, driven
//! through chromedriver (Debian's `chromium` and `chromium-driver`,
//! installed by `.ci/run`) with fantoccini, both on loopback.
//!
//! Without chromedriver the tests say they skip and pass, unless
//! `RILL_REQUIRE_BROWSER` is set (as `.ci/run` sets it), which makes a
//! missing browser a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go (kept as test artifacts).
    pub shots: PathBuf,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// A browser with a window of `width`×`height`, or `None` (said on
    /// stderr) when chromedriver is not installed.
    pub async fn start(width: u32, height: u32) -> Option<Self> {
        let Some(driver_bin) = find(&["chromedriver"]) else {
            assert!(
                std::env::var_os("RILL_REQUIRE_BROWSER").is_none(),
                "RILL_REQUIRE_BROWSER is set and chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: chromedriver is not installed; to run the console's browser tests: apt-get install chromium chromium-driver"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that killing the group takes the
        // browsers it started too, even when a test panics.
        use std::os::unix::process::CommandExt;
        let driver = Command::new(driver_bin)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
        let mut options = json!({
            "args": [
                "--headless=new",
                // Root in CI containers: Chromium's sandbox needs a user.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                format!("--window-size={width},{height}"),
            ],
        });
        if let Some(chromium) = chromium {
            options["binary"] = Value::from(chromium.to_string_lossy().to_string());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("chromedriver did not start a session: {err}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let browser = Self {
            client,
            driver,
            shots,
        };
        browser.resize(width, height).await;
        Some(browser)
    }

    /// Sets the viewport (not the window, whose frame varies) to this size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .unwrap();
        let (iw, ih) = (
            inner[0].as_u64().unwrap() as u32,
            inner[1].as_u64().unwrap() as u32,
        );
        self.client
            .set_window_size(2 * width - iw, 2 * height - ih)
            .await
            .unwrap();
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits until the element `css` shows text containing `text` (not
    /// empty: an element that is not there shows nothing).
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        assert!(!text.is_empty(), "wait for some text");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let shown = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown.contains(text) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never showed {text:?}; it shows {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element `css` shows exactly `text`.
    pub async fn wait_exact(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let shown = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown.trim() == text {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never showed exactly {text:?}; it shows {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `value` into the field `name` of the form `#form` and submits it.
    pub async fn submit(&self, form: &str, fields: &[(&str, &str)]) {
        for (name, value) in fields {
            let css = format!("#{form} [name=\"{name}\"]");
            let input = self
                .client
                .wait()
                .for_element(Locator::Css(&css))
                .await
                .unwrap();
            input.send_keys(value).await.unwrap();
        }
        let button = format!("#{form} button[type=submit]");
        self.client
            .find(Locator::Css(&button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Saves a screenshot as `{name}.png` among the artifacts, and checks
    /// that nothing makes the page wider than the window.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // Let charts and tables settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let overflow = self
            .client
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{name}: the page is {overflow}px wider than the window"
        );
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session cleanly; dropping then stops the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
