use idem_runtime::IdemKey;

#[derive(IdemKey)]
pub enum Payment {
    Card { last4: u16 },
    // Renamed from `Card`, but `Card` is still a variant: both would key as "Card".
    #[idem(tag = "Card")]
    CreditCard { last4: u16 },
    #[idem(tag = "wire")]
    Transfer(String),
    #[idem(tag = "wire")]
    Sepa(String),
}

fn main() {}
