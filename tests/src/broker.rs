//! A broker process under test.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a broker may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago (the controller listener needs a fixed port because the
/// voter list names it; the client listener binds port 0 instead).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One `fjord broker` process in combined mode, with its data in `dir`.
pub struct BrokerProcess {
    binary: PathBuf,
    dir: PathBuf,
    controller_port: u16,
    extra: Vec<(String, String)>,
    child: Option<Child>,
    /// `host:port` of the PLAINTEXT listener.
    pub bootstrap: String,
    /// `host:port` of the HTTP listener (metrics and control API), when the extra properties
    /// set `http.listener`.
    pub http: Option<String>,
    starts: usize,
}

impl BrokerProcess {
    /// Starts a broker whose data lives under `dir`; `extra` are additional properties.
    pub fn start(binary: &Path, dir: &Path, extra: &[(&str, &str)]) -> BrokerProcess {
        let mut b = BrokerProcess {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            controller_port: free_port(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            bootstrap: String::new(),
            http: None,
            starts: 0,
        };
        b.launch();
        b
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("fjord.toml")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The broker's stderr log of its latest start.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join(format!("broker-{}.log", self.starts))
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let mut text = format!(
            "node.id = 1\n\
             process.roles = \"broker,controller\"\n\
             listeners = \"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}\"\n\
             controller.quorum.voters = \"1@127.0.0.1:{port}\"\n\
             log.dirs = \"{d}/logs\"\n\
             metadata.log.dir = \"{d}/metadata\"\n",
            port = self.controller_port
        );
        // A single broker cannot host __consumer_offsets with Kafka's default replication
        // factor of 3, and any consumer with a group.id asks for it.
        if !self
            .extra
            .iter()
            .any(|(k, _)| k == "offsets.topic.replication.factor")
        {
            text.push_str("\"offsets.topic.replication.factor\" = \"1\"\n");
        }
        for (k, v) in &self.extra {
            let _ = writeln!(text, "\"{k}\" = \"{v}\"");
        }
        std::fs::write(self.config_path(), text).expect("write broker config");
    }

    fn launch(&mut self) {
        self.starts += 1;
        self.write_config();
        let stderr = std::fs::File::create(self.stderr_path()).expect("create broker log");
        let mut child = Command::new(&self.binary)
            .args(["broker", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn the broker");
        let stdout = child.stdout.take().expect("broker stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("fjord: listening PLAINTEXT ") {
                    let _ = tx.send((false, addr.trim().to_string()));
                } else if let Some(addr) = line.strip_prefix("fjord: http listening ") {
                    let _ = tx.send((true, addr.trim().to_string()));
                }
            }
        });
        self.child = Some(child);
        // The HTTP line follows the client listeners' lines when `http.listener` is set.
        let wants_http = self.extra.iter().any(|(k, _)| k == "http.listener");
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut bootstrap, mut http) = (None, None);
        while bootstrap.is_none() || (wants_http && http.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((false, addr)) => bootstrap = Some(addr),
                Ok((true, addr)) => http = Some(addr),
                Err(_) => {
                    self.kill();
                    panic!(
                        "broker did not start within {START_TIMEOUT:?}; log:\n{}",
                        self.log_tail()
                    );
                }
            }
        }
        self.bootstrap = bootstrap.unwrap_or_default();
        self.http = http;
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // Safety: signalling a child we spawned and have not reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the broker again on the same data (and controller port).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
