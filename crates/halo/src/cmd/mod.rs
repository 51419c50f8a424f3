//! One module per subcommand; each is thin glue over `halo-config`, `crate::files` and `crate::daemon`.

pub mod check;
pub mod import;
pub mod reload;
pub mod render;
pub mod run;
pub mod server;
pub mod status;
pub mod upgrade;
