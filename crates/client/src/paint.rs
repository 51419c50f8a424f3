//! The colours state words get on a terminal, as `halo status` and the lab's view show them.

/// Pads a state word to `width` and, when `colour`, wraps it in its terminal colour: green when
/// serving, red when not, yellow between.
pub fn paint(word: &str, width: usize, colour: bool) -> String {
    let padded = format!("{word:<width$}");
    let code = match word {
        "MASTER" | "UP" | "listening" | "yes" | "ANNOUNCED" => "32",
        "FAULT" | "DOWN" | "NOT LISTENING" | "stopped" => "31",
        "BACKUP" | "INIT" | "WITHDRAWN" | "DRAIN" | "MAINT" | "MAINTENANCE" => "33",
        _ => return padded,
    };
    if colour { format!("\x1b[{code}m{padded}\x1b[0m") } else { padded }
}
