//! `bergamotd` as a library: the wiring that runs the scheduler, workers,
//! result processor and web node of Bergamot in one process, so a packager
//! builds a custom daemon (own executors, own backends) in a short `main.rs`:
//!
//! ```no_run
//! use bergamot_core::exec::Executors;
//! use bergamot_daemon::{run, Backends, Options};
//!
//! # async fn demo() -> bergamot_core::Result<()> {
//! let config = bergamot_daemon::cli::load_config("examples/demo.toml".as_ref())?;
//! let options = Options { auth: (&config.web).into(), ..Options::default() };
//! let mut executors = Executors::standard();
//! // executors.register(Arc::new(MyExecutor));
//! run(config.model, Backends::in_memory(), executors, options, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Layout: [`cli`] (the command line), [`backends`] (the store and queue
//! a `--store` / `--queue` URL selects), [`wiring`] (roles over backends),
//! [`roles`], [`web`] (REST API, websocket, auth, metrics, embedded UI).

#![warn(unreachable_pub)]

pub mod backends;
pub mod cli;
pub mod health;
pub(crate) mod preflight;
pub mod roles;
pub mod web;
pub mod wiring;

pub use roles::Roles;
pub use wiring::{run, start, Backends, Options, Running};
