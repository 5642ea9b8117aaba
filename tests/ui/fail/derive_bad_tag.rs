use idem_runtime::IdemKey;

#[derive(IdemKey)]
pub enum Payment {
    #[idem(skip)]
    Card { last4: u16 },
    #[idem(tag = 3)]
    Transfer(String),
    #[idem(tag = "")]
    Cash,
    #[idem(tag = "a", tag = "b")]
    Voucher,
}

fn main() {}
