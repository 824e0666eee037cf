//! The worker's image assembly judged on the fixture images the registry serves: `unsquashfs`
//! and an independent extraction (`umoci unpack`, then `mksquashfs`) are the judges.

mod squashfs;
