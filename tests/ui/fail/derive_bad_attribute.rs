use idem_runtime::IdemKey;

#[derive(IdemKey)]
pub struct Quote {
    pub sku: String,
    #[idem(ignore)]
    pub price: f64,
}

fn main() {}
