use idem_runtime::IdemKey;

#[derive(IdemKey)]
pub struct Quote {
    pub sku: String,
    pub price: f64,
}

#[derive(IdemKey)]
pub enum Event {
    Created { id: u64 },
    Tagged(std::collections::HashSet<String>),
}

fn main() {}
