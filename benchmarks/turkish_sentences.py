"""Real Turkish sentences (dotted/dotless i, ğ, ş, ç, ö, ü; suffixes after apostrophes) from which the
benchmarks build synthetic corpora of any size: one list, shared by crash_resume, corpus_scale and fuzz_inputs."""

SENTENCES = [
    "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır.",
    "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı.",
    "Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu.",
    "Çocuklar bahçede top oynarken yaşlı adam gazetesini okuyordu.",
    "Kütüphanedeki kitapların çoğu Osmanlıca ve Türkçe yazılmıştı.",
    "Şehrin eski sokaklarında dolaşmak insana huzur veriyor.",
    "Denizin kıyısında oturup çayımızı yudumlarken güneş batıyordu.",
    "Pazartesi günü toplantıya katılamayacağımı müdürüme bildirdim.",
]
