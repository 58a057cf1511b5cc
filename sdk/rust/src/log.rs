//! Lines in the gateway's log, through the contract's `host.log` import. The gateway tags each
//! line with the plugin's name and the request id, and bounds how many lines and bytes a call
//! may write.
//!
//! ```
//! use portcullis_plugin::log;
//!
//! log::info!("checked {} mounts", 3);
//! log::log(log::Level::Warn, "something is off");
//! ```
//!
//! Outside WebAssembly (a plugin's native unit tests) lines go to standard error.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Useful when debugging a policy.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` to the gateway's log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::portcullis::plugin::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    // The generated import only links inside a component.
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) };
}

/// Logs at [`Level::Trace`], with `format!` arguments.
#[doc(inline)]
pub use crate::__log_trace as trace;

/// Logs at [`Level::Debug`], with `format!` arguments.
#[doc(inline)]
pub use crate::__log_debug as debug;

/// Logs at [`Level::Info`], with `format!` arguments.
#[doc(inline)]
pub use crate::__log_info as info;

/// Logs at [`Level::Warn`], with `format!` arguments.
#[doc(inline)]
pub use crate::__log_warn as warn;

/// Logs at [`Level::Error`], with `format!` arguments.
#[doc(inline)]
pub use crate::__log_error as error;
