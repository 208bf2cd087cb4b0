//! Rebuilds this crate when a migration is added or changed: the migrations are embedded in it
//! at compile time (`refinery::embed_migrations!`), which cargo does not track by itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
