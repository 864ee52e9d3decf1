//! The embedded font. plotters measures and draws text with a registered font and finds no system fonts
//! (none may be installed where reports are built), so DejaVu Sans ships inside the crate
//! (`assets/DejaVuSans.ttf`, licence in `assets/DejaVuSans-LICENSE.txt`).

use plotters::style::FontStyle;
use std::sync::Once;

/// The family name charts ask for.
pub const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font under [`FAMILY`] (once per process; later calls do nothing).
pub fn ensure_registered() {
    REGISTER.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            unreachable!("the embedded DejaVu Sans is a valid TrueType font");
        }
    });
}
