"""Text front end: written English to the spoken form the backbone is trained on.

Numbers are spelled with num2words (a well-kept library: cardinals, ordinals,
years, currency); the patterns around them (times, dates, units, versions, URLs,
e-mail addresses, phone numbers, acronyms, abbreviations, symbols) are regular
expressions written here, in the order they must run (an address before its dots
could be decimals, a range before its hyphen could be a minus). NeMo's WFST
normaliser covers more, but needs pynini/OpenFst, a heavy native build, for what
these rules do in a millisecond. Each rule is linear in the text's length (a
quadratic one took 24 s on 100 000 characters). The output is lower case
letters, digits-free, with the punctuation that shapes prosody (, . ? ! ; : ' -).
The same function normalises training transcripts and user text, so the model
learns one reading of everything.
"""
from __future__ import annotations

import logging
import re
import unicodedata

from num2words import num2words

log = logging.getLogger(__name__)

KEEP_PUNCTUATION = ",.?!;:'-"
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
_MONTH_ABBR = {m[:3]: m for m in MONTHS} | {"sept": "september"}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "prof": "professor", "st": "saint",
    "jr": "junior", "sr": "senior", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "incl": "including", "ext": "extension",
    "dept": "department", "est": "established", "ft": "feet", "mt": "mount", "gen": "general",
    "capt": "captain", "lt": "lieutenant", "col": "colonel", "sgt": "sergeant", "rev": "reverend", "ave": "avenue",
    "rd": "road", "blvd": "boulevard", "apt": "apartment", "bldg": "building", "rm": "room", "fl": "floor",
    "ste": "suite",
    "inc": "incorporated", "ltd": "limited", "co": "company", "corp": "corporation",
}
TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "gen", "capt", "lt", "col", "sgt", "rev"}
LATIN = {"e.g.": "for example", "i.e.": "that is", "a.m.": "eh m", "p.m.": "p m", "ph.d.": "p h d"}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number ", "%": " percent ",
           "°": " degrees ", "×": " times ", "/": " slash ", "~": " about ", "<": " less than ",
           ">": " greater than ", "±": " plus or minus "}
_WEEKDAY_ABBR = {"mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday", "thu": "thursday",
                 "thur": "thursday", "thurs": "thursday", "fri": "friday", "sat": "saturday", "sun": "sunday"}
# "$15/month", "3/day": an amount per one of these ("per month"), not a slash or a fraction
PER_WORDS = {"month": "month", "mo": "month", "year": "year", "yr": "year", "week": "week", "wk": "week",
             "day": "day", "night": "night", "hour": "hour", "hr": "hour", "person": "person", "user": "user",
             "seat": "seat", "head": "head", "unit": "unit", "item": "item", "kg": "kilogram", "lb": "pound",
             "gallon": "gallon", "mile": "mile"}
KEYPAD_KEYS = {"*": "star", "#": "pound"}
_WEEKDAYS = "|".join(f"[{d[0].upper()}{d[0]}]{d[1:]}" for d in sorted(set(_WEEKDAY_ABBR.values())))
# business shorthand, as written (case matters: "mom" is a word)
SHORTHANDS = {"YoY": "year over year", "QoQ": "quarter over quarter", "MoM": "month over month"}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "sen", "sen")}
CURRENCY_CODES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
SCALES = {"thousand", "million", "billion", "trillion"}
_NUMBER = r"\d(?:[\d,]*\d)?(?:\.\d+)?"   # "1,234.5"; a comma after a number is punctuation ("I have 2, not 3")
_SCALE_SUFFIXES = {"k": "thousand", "m": "million", "bn": "billion", "b": "billion"}   # "$5m", "£2bn"
# Units read after a number ("5 km", "3.5kg", "100 km/h"); a unit alone ("km") is left as written.
UNITS = {
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "km": "kilometer", "ft": "foot|feet", "mi": "mile",
    "mg": "milligram", "g": "gram", "kg": "kilogram", "lb": "pound", "lbs": "pound", "oz": "ounce",
    "ml": "milliliter", "ms": "millisecond", "sec": "second", "secs": "second", "min": "minute", "mins": "minute",
    "hr": "hour", "hrs": "hour", "mph": "mile per hour|miles per hour",
    "km/h": "kilometer per hour|kilometers per hour",
    "kph": "kilometer per hour|kilometers per hour", "m/s": "meter per second|meters per second",
    "kb": "kilobyte", "KB": "kilobyte", "MB": "megabyte", "GB": "gigabyte", "TB": "terabyte",
    "MB/s": "megabyte per second|megabytes per second", "GB/s": "gigabyte per second|gigabytes per second",
    "kbps": "kilobit per second|kilobits per second", "Mbps": "megabit per second|megabits per second",
    "Gbps": "gigabit per second|gigabits per second", "Hz": "hertz|hertz", "kHz": "kilohertz|kilohertz",
    "MHz": "megahertz|megahertz", "GHz": "gigahertz|gigahertz", "W": "watt", "kW": "kilowatt", "kWh": "kilowatt hour",
    "V": "volt", "mAh": "milliamp hour", "h": "hour", "tsp": "teaspoon", "tbsp": "tablespoon", "gal": "gallon",
    "yd": "yard",
}
_UNIT_PATTERN = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
# Fractions said as fractions ("3/4": three quarters) have these denominators and a smaller numerator;
# any other "a/b" between numbers is said as two numbers ("24/7", "9/11", "50/50").
_FRACTION_DENOMINATORS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters"),
                          5: ("fifth", "fifths"), 6: ("sixth", "sixths"), 8: ("eighth", "eighths"),
                          10: ("tenth", "tenths"), 16: ("sixteenth", "sixteenths"), 100: ("hundredth", "hundredths")}
_VULGAR_FRACTIONS = {"½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅛": "1/8",
                     "⅜": "3/8", "⅝": "5/8", "⅞": "7/8"}
# Roman numerals are ordinals after a ruler's name or a title and a name ("Henry VIII", "Pope Pius XII",
# "King Zog II"), numbers after any other word ("World War II", "Rocky II", "Final Fantasy VII").
REGNAL_NAMES = {
    "Alexander", "Alfonso", "Amenhotep", "Anne", "Augustus", "Baldwin", "Benedict", "Boniface", "Carlos", "Catherine",
    "Charles", "Christian", "Clement", "Constantine", "David", "Edmund", "Edward", "Elizabeth", "Ferdinand", "Francis",
    "Frederick", "Friedrich", "George", "Gregory", "Gustav", "Gustavus", "Haakon", "Harald", "Henri", "Henry",
    "Innocent", "Isabella", "Ivan", "James", "Jean", "John", "Joseph", "Juan", "Julius", "Leo", "Leopold", "Louis",
    "Ludwig", "Malcolm", "Manuel", "Mary", "Napoleon", "Nicholas", "Olaf", "Otto", "Paul", "Pedro", "Peter", "Philip",
    "Pius", "Ptolemy", "Ramesses", "Rameses", "Richard", "Robert", "Rudolf", "Sixtus", "Stephen", "Thutmose", "Urban",
    "Victor", "Wilhelm", "William"}
ROYAL_TITLES = ("King", "Queen", "Pope", "Emperor", "Empress", "Tsar", "Czar", "Sultan", "Pharaoh", "Prince",
                "Princess", "Duke", "Duchess", "Count", "Saint", "St")
# Capitalised words that start a sentence, not a title: "The IV bag" is letters, not "the four bag".
_NOT_BEFORE_NUMERALS = ("The", "A", "An", "In", "On", "At", "Of", "And", "But", "Or", "To", "For", "With", "His",
                        "Her", "My", "Our", "Your", "Their", "This", "That", "Its", "No")
# II to XXXIX, a whole word: "I", "V" and "X" alone are too often words
_ROMAN = r"(?=[IVX]{2,}\b)X{0,3}(?:IX|IV|V?I{0,3})(?<=[IVX])"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10}
_REGNAL_NUMERAL = re.compile(rf"\b((?:(?:{'|'.join(ROYAL_TITLES)})\.?\s+[A-Z][a-z]+"
                             rf"|(?:{'|'.join(sorted(REGNAL_NAMES))}))\s+)({_ROMAN})\b")
# (?<![\w-]): a word starts only where its hyphenated run does (from inside "Mon-Mon-...", quadratic)
_COUNTED_NUMERAL = re.compile(rf"(?<![\w-])(?!(?:{'|'.join(_NOT_BEFORE_NUMERALS)})\b)([A-Z][\w-]*)\s+({_ROMAN})\b")
# Upper-case words read as words, not letter by letter.
ACRONYM_WORDS = {"NASA", "NATO", "UNESCO", "UNICEF", "LASER", "RADAR", "SCUBA", "OPEC", "AIDS", "FIFA", "ASCII",
                 "GIF", "JPEG", "SIM", "PIN", "RAM", "ROM", "LAN", "WAN", "UNIX", "LINUX", "COBOL", "FORTRAN"}
# Letters said by name where a word is spelled. A lone "a" would be read as the article (espeak-ng: a schwa,
# so "USA" was "you es uh" and "9 a.m." "nine uh em"); "eh" is read as the letter's name.
_LETTER_NAMES = {"w": "double u", "a": "eh"}
# Upper-case words of one to three letters read as words ("STOP THE CAR"); the rest are spelled ("FBI").
# Left out on purpose: those as often an acronym ("US", "IT", "AM", "PM", "WHO", "OK", "ID").
CAPS_SHORT_WORDS = set("""
    A I AN AS AT BE BY DO GO HE IF IN IS ME MY NO OF ON OR SO TO UP WE
    ADD AGE AGO AIR ALL AND ANY ARE ART ASK BAD BAG BED BIG BOX BOY BUT BUY CAN CAR CAT CUT DAY DID DOG
    EAT END EYE FAR FEW FOR FUN GET GOD GOT GUN HAD HAS HER HIM HIS HOT HOW JOB KEY LAW LET LIE LOT LOW
    MAN MAY MEN NEW NOR NOT NOW OFF OIL OLD ONE OUR OUT OWN PAY PUT RED RUN SAW SAY SEE SET SHE SIT SIX
    SUN TEN THE TOO TOP TRY TWO USE WAR WAS WAY WHY WIN YES YET YOU ACT ARM BIT BUS DIE FIT FLY HAT HEY
    ICE ILL INK JOY LAY LEG MAP MIX NET PEN PET PIG POT RAT RAY SAD SEA SKY TAX TEA TIE TOY WET WON ZOO
    BET BUN COW DUE EGG EGO ELF GAG GAS GIN HIT MAD MID SEX SOY SUB TIP TUB WOO ANN BOB DON KEN
""".split())
# A longer upper-case word reads as a word when it could be English: a vowel, and only consonant runs
# that English words have ("ESPN", "ISBN", "USSR", "NYPD" have others). The runs: those of at least five
# different lower-case words of the corpus's texts (15 643 words of 4+ letters, session 33), and a few of
# fewer words that upper-case words of the corpus needed (WORLD, FIFTH, WARMTH, VODKA, SARTRE, CRISPS).
_CONSONANT_RUNS_OF_WORDS = {"rld", "fth", "rmth", "dk", "rtr", "sps"} | set("""
    bb bd bj bl bm bn br bs bt cc ch ck cl cq cr cs ct dd dg dj dl dm dn dr ds dv dw ff fl fr fs ft gg gh gl gm gn
    gr gs kl kn ks lb lc ld lf lg lk ll lm ln lp lr ls lt lv mb mf mm mn mp ms nb nc nd nf ng nh nj nk nl nm nn np
    nq nr ns nt nv nw nz ph pl pm pp pr ps pt rb rc rd rf rg rh rk rl rm rn rp rr rs rt rv rw sb sc sd sf sg sh sk
    sl sm sn sp sq sr ss st sw tb tc tf th tl tm tn tr ts tt tw wb wd wf wh wl wn wr ws xc xh xp xt zz bbl bsc bst
    btl chn chr ckl ckn cks ckt ckw ctl ctr cts ddl ddr ffl ffs ggl ggr ghb ghs ght gns lds lks lls lph lth lts mbl
    mbr mbs mph mpl mpr mps mpt mst nch ncl ncr nct ndl ndr nds nfl nfr ngl ngr ngs nkl nks nsc nsf nsh nsl nsm nsp
    nst nsw nth ntl ntm ntr nts phr ppl ppr pst pts rch rdl rdr rds rfl rks rms rnm rns rph rpl rpr rsh rst rth rtl
    rtm rts sch scr shm shr sks sms sph spl spr ssl ssm sth stl stm str sts tch thf thl thr ths tht ttl ttr wns xcl
    xpl xpr xtr zzl ghtf ghtl ghts ngth nstr nthr
""".split())
SPELLED_ACRONYMS = {"UCLA", "ACLU"}   # that the rule above would say as words


MAX_SPOKEN_DIGITS = 15   # a longer whole number is read digit by digit (and Python's int() stops at 4 300)


def _cardinal(n: str | int | float) -> str:
    return num2words(n).replace(",", "")


def _digits(text: str) -> str:
    return " ".join(_cardinal(int(d)) for d in text)


def _integer_words(digits: str, ordinal: bool = False) -> str:
    """'42' -> 'forty-two' ('forty-second'); a number of more than MAX_SPOKEN_DIGITS digits is a code,
    said digit by digit."""
    if len(digits) > MAX_SPOKEN_DIGITS:
        return _digits(digits)
    return num2words(int(digits), to="ordinal").replace(",", "") if ordinal else _cardinal(int(digits))


def _number_words(text: str) -> str:
    """'1,234.56' -> 'one thousand two hundred thirty-four point five six'."""
    whole, _, frac = text.replace(",", "").partition(".")
    spoken = _integer_words(whole or "0")
    return spoken + " point " + _digits(frac) if frac else spoken


def _year(n: int) -> str:
    return num2words(n, to="year").replace(",", "")


def _decade(year: int) -> str:
    """1980 -> 'nineteen eighties'."""
    spoken = _year(year)
    return (spoken[:-1] + "ies") if spoken.endswith("y") else spoken + "s"


def _currency(match: re.Match) -> str:
    symbol, amount = match.group(1), match.group(2).replace(",", "")
    scale = (match.group(3) or match.group(4) or "").lower()
    scale = _SCALE_SUFFIXES.get(scale, scale)
    one, many, sub_one, sub_many = CURRENCIES[symbol]
    if scale:
        return f"{_number_words(amount)} {scale} {many}"
    whole, _, cents = amount.partition(".")
    n = int(whole or "0") if len(whole) <= MAX_SPOKEN_DIGITS else -1   # -1: too long to be a sum, said as digits
    parts = [f"{_integer_words(whole or '0')} {one if n == 1 else many}"] if n or not cents else []
    if cents:
        c = int((cents + "0")[:2])
        if c:
            parts.append(f"{_cardinal(c)} {sub_one if c == 1 else sub_many}")
    return " and ".join(parts) or f"zero {many}"


def _time(match: re.Match) -> str:
    h, m, suffix = int(match.group(1)), int(match.group(2)), (match.group(3) or "").lower().replace(".", "")
    if h > 24 or m > 59:
        return match.group(0).replace(":", " ")
    return _time_words(h, m, suffix)


def _time_words(h: int, m: int, suffix: str) -> str:
    """A time of day: 'ten thirty p m', 'nine o'clock', on a 24-hour clock 'seventeen hundred'."""
    words = _cardinal(h)
    if m == 0:
        words += "" if suffix else " hundred" if h > 12 else " o'clock"
    elif m < 10:
        words += " oh " + _cardinal(m)
    else:
        words += " " + _cardinal(m)
    return words + (" " + _spelled(suffix) if suffix else "")


def _spoken_date(month: int, day: int, year: int) -> str | None:
    """'december twenty-fifth twenty twenty-four'; None where month or day cannot be one."""
    month_day = _month_day_numbers(month, day)
    return f"{month_day} {_year(year)}" if month_day else None


def _month_day_numbers(month: int, day: int) -> str | None:
    """'march fifteenth'; None where month or day cannot be one."""
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return None
    return f"{MONTHS[month - 1]} {num2words(day, to='ordinal')}"


def _iso_date(match: re.Match) -> str:
    y, m, d = int(match.group(1)), int(match.group(2)), int(match.group(3))
    return _spoken_date(m, d, y) or match.group(0).replace("-", " ")


def _month_day(match: re.Match) -> str:
    month = _MONTH_ABBR.get(match.group(1).lower()[:4].rstrip("."), None) or _MONTH_ABBR[match.group(1).lower()[:3]]
    day = int(match.group(2))
    return f"{month} {num2words(day, to='ordinal')}" if 1 <= day <= 31 else match.group(0)


def _unit(match: re.Match) -> str:
    """'5 km' -> '5 kilometers' (the number is spelled later); '1 km' -> '1 kilometer'; after 'a' the
    measure describes a noun and stays singular ('a 60 W bulb' -> 'a 60 watt bulb'); a unit per another unit
    ('5 mg/kg') -> '5 milligrams per kilogram'."""
    article, number, unit = match.group(1), match.group(2), UNITS[match.group(3)]
    one, _, many = unit.partition("|")
    per = f" per {UNITS[match.group(4)].partition('|')[0]}" if match.group(4) else ""
    return f"{article or ''}{number} {one if number == '1' or article else (many or one + 's')}{per}"


def _fraction_of_unit(match: re.Match) -> str:
    """'3/4 tsp' -> '3/4 of a teaspoon' (the fraction is said later), where the pair is a fraction."""
    a, b = int(match.group(1)), int(match.group(2))
    if b not in _FRACTION_DENOMINATORS or not 0 < a < b:
        return match.group(0)
    one = UNITS[match.group(3)].partition("|")[0]
    return f"{a}/{b} of {'an' if one[0] in 'aeiou' or one.startswith('hour') else 'a'} {one}"


def _month_first(first: int, second: int) -> tuple[int, int]:
    """(month, day) of a written pair: month first, or day first where the first part cannot be a month."""
    return (second, first) if first > 12 else (first, second)


def _pair_as_date(first: str, second: str) -> str | None:
    """'3/15' -> 'march fifteenth'; None where the pair cannot be a date or is a fraction the rule below says.
    A part written with a leading zero ('02/04') is never a fraction."""
    a, b = int(first), int(second)
    leading_zero = first.startswith("0") or second.startswith("0")
    is_fraction = not leading_zero and b in _FRACTION_DENOMINATORS and 0 < a < b
    return None if is_fraction else _month_day_numbers(*_month_first(a, b))


def _dated(match: re.Match) -> str:
    """'on 3/15' -> 'on march fifteenth' where the pair is a date and not a fraction."""
    month_day = _pair_as_date(match.group(2), match.group(3))
    return f"{match.group(1)} {month_day}" if month_day else match.group(0)


def _phone_digits(match: re.Match) -> str:
    """'555-123-4567', '(555) 123-4567', '555.123.4567' -> its digit groups said digit by digit; the toll-free
    area code as it is said ('1-800-555-0199': one, eight hundred, five five five, ...)."""
    groups = re.findall(r"\d+", match.group(0))
    return ", ".join("eight hundred" if group == "800" and i == len(groups) - 3 else _digits(group)
                     for i, group in enumerate(groups))


def _fraction(match: re.Match) -> str:
    """'3/4' -> 'three quarters', '24/7' -> 'twenty-four seven', '12/25/2024' -> 'december twenty-fifth ...'."""
    a, b = (int(g) if len(g) <= 3 else 0 for g in match.groups())   # 0: no fraction has such a part
    if b in _FRACTION_DENOMINATORS and 0 < a < b:
        one, many = _FRACTION_DENOMINATORS[b]
        return f"{_cardinal(a)} {one if a == 1 else many}"
    return f"{match.group(1)} {match.group(2)}"


def _slash_date(match: re.Match) -> str:
    """'12/25/2024' (month first, or day first where the first part cannot be a month) -> spoken date."""
    month, day = _month_first(int(match.group(1)), int(match.group(2)))
    return _spoken_date(month, day, int(match.group(3))) or match.group(0).replace("/", " ")


def _roman(numeral: str) -> int:
    values = [_ROMAN_VALUES[c] for c in numeral]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def _dotted_acronym(match: re.Match) -> str:
    """'U.K.' -> 'u k'; the last period stays where it ends the text ("the U.S. Navy" is one phrase)."""
    return _spelled(match.group(1).replace(".", "")) + ("." if match.group(2) is not None else "")


_DOMAIN_ENDINGS = "com|org|net|edu|gov|io|co\\.uk|ai|dev|app|info"


def _spoken_url(text: str) -> str:
    text = re.sub(r"^(https?|ftp)://", "", text)
    text = re.sub(r"^www\.", "w w w.", text)
    text = text.rstrip("/")
    for sym, word in ((".", " dot "), ("/", " slash "), ("-", " dash "), ("_", " underscore "), ("@", " at "),
                      (":", " colon "), ("?", " question mark "), ("=", " equals "), ("&", " and ")):
        text = text.replace(sym, word)
    return f" {text} "


def _acronym(match: re.Match) -> str:
    word = match.group(0)
    plural = word.endswith("s") and word[:-1].isupper()
    core = word[:-1] if plural else word
    if core in ACRONYM_WORDS or _reads_as_word(core):
        return core.lower() + ("s" if plural else "")
    return _spelled(core) + (" s" if plural else "")


def _spelled(letters: str) -> str:
    """'FBI' -> 'f b i', 'USA' -> 'u s eh': each letter by its name."""
    return " ".join(_LETTER_NAMES.get(c, c) for c in letters.lower())


def _reads_as_word(word: str) -> bool:
    """Whether an upper-case word is said as a word ('STOP', 'TENDER') rather than spelled ('FBI', 'HTML')."""
    if len(word) <= 3:
        return word in CAPS_SHORT_WORDS
    if word in SPELLED_ACRONYMS:
        return False
    lower = word.lower()
    consonant_runs = re.findall(r"[^aeiouy]+", lower)
    return (bool(consonant_runs) and re.search(r"[aeiou]", lower) is not None
            and not re.search(r"[aeiou]{4}", lower)   # "IIII", "IEEE" ("QUEEN", "HAWAII" are words)
            and all(len(run) == 1 or run in _CONSONANT_RUNS_OF_WORDS for run in consonant_runs))


def _dotted_number(match: re.Match) -> str:
    """'192.168.0.1' -> 'one nine two dot one six eight dot zero dot one'; '3.12.1' -> 'three point twelve
    point one' (a part with a leading zero digit by digit); '25.12.2024' (day first) -> a date."""
    parts = match.group(0).split(".")
    if len(parts) == 3 and len(parts[2]) == 4 and len(parts[0]) <= 2 and len(parts[1]) <= 2:
        date = _spoken_date(int(parts[1]), int(parts[0]), int(parts[2]))
        if date:
            return date
    if len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts):
        return " dot ".join(_digits(p) for p in parts)
    return _point_parts(parts)


def _point_parts(parts: list[str]) -> str:
    """['3', '12', '01'] -> 'three point twelve point zero one': each part a number, or digit by digit where it
    has a leading zero or is too long for words."""
    return " point ".join(_digits(p) if (len(p) > 1 and p.startswith("0")) or len(p) > MAX_SPOKEN_DIGITS
                          else _cardinal(int(p)) for p in parts)


def _version(match: re.Match) -> str:
    """'v1.2.3456' -> 'version one point two point three thousand ...'; 'release 2.10.1' keeps its word. A
    version is never a date or an address, whatever its parts."""
    return f" {match.group(1) or 'version'} {_point_parts(match.group(2).split('.'))}"


def _code(match: re.Match, always: bool = False) -> str:
    """'XK7-99P' -> 'x k seven, ninety-nine p', 'INV-2026-0042' -> 'i n v, two zero two six, zero zero four two':
    a code's letters spelled, a pause at each hyphen, its numbers of one or two digits said as numbers
    ("RSX-11M": r s x, eleven m) and longer ones digit by digit. Two parts of letters and of digits alone
    ("COVID-19", "B-52", "UTF-8") are a name and its number: left to the rules after, unless `always` (after
    "#", "#A-99812" is an order number). The code is the match's last group, or the whole match where it has none."""
    parts = match.group(match.lastindex or 0).split("-")
    if not always and len(parts) == 2 and not any(re.search(r"[A-Z]\d|\d[A-Z]", part) for part in parts):
        return match.group(0)

    def said(run: str) -> str:
        return _spelled(run) if run.isalpha() else _digits(run) if len(run) > 2 or run[0] == "0" else _cardinal(run)
    return ", ".join(" ".join(said(run) for run in re.findall(r"[A-Z]+|\d+", part)) for part in parts)


def _clock_duration(match: re.Match) -> str:
    """'3:45:12' -> 'three hours, forty-five minutes and twelve seconds' (a race, a video); 'at 10:30:15' is a
    time of day and its seconds."""
    h, m, sec = (int(g) for g in match.groups()[1:])
    if match.group(1):
        return f"{match.group(1)}{_time_words(h, m, '')}" + (f" and {_cardinal(sec)} seconds" if sec else "")
    parts = [f"{_cardinal(n)} {unit}{'' if n == 1 else 's'}"
             for n, unit in ((h, "hour"), (m, "minute"), (sec, "second")) if n] or ["zero seconds"]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _mixed_number(match: re.Match) -> str:
    """'1 1/2' -> '1 and 1/2' (the fraction rule then says it), where the pair is a fraction."""
    a, b = (int(g) for g in match.group(2).split("/"))
    return f"{match.group(1)} and {match.group(2)}" if b in _FRACTION_DENOMINATORS and 0 < a < b else match.group(0)


def _keypad(match: re.Match) -> str:
    """'Press * then #' -> 'press star then pound': the keys of a phone's keypad after a verb that presses them."""
    return match.group(1) + re.sub(r"[*#]", lambda key: f" {KEYPAD_KEYS[key.group(0)]} ", match.group(2))


def _abbreviation(match: re.Match) -> str:
    """'Dr. Smith' -> 'doctor Smith'; 'etc.' keeps its period where it also ends the sentence."""
    word, after = match.group(1), match.group(2) or ""
    spoken = ABBREVIATIONS.get(word.lower())
    if spoken is None:
        return match.group(0)
    before_punctuation = match.group(3) is not None   # "etc., and": the comma says the pause
    ends_sentence = word.lower() not in TITLES and not before_punctuation and (after == "" or after[:1].isupper())
    return spoken + ("." if ends_sentence else "")


def is_abbreviation(word: str) -> bool:
    """'Dr', 'etc', 'Jan', 'Tue', 'e.g', 'J': a written word after which a full stop need not end the sentence."""
    word = word.lower().strip("\"'(")
    return (len(word) == 1 or word in ABBREVIATIONS or word in TITLES or word in _MONTH_ABBR or word in _WEEKDAY_ABBR
            or "." in word)


def _strip_accents(text: str) -> str:
    """'Ünïcödé' -> 'Unicode': letters keep their base, combining marks go."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize_text(text: str) -> str:
    """Written English -> lower-case spoken form (see module doc). Unsupported characters are dropped
    with a warning naming them."""
    # Vulgar fractions before NFKC, which would glue "2½" into "21⁄2".
    text = re.sub(r"(\d)?([½⅓⅔¼¾⅕⅛⅜⅝⅞])", lambda m: (m.group(1) + " and " if m.group(1) else " ")
                  + _VULGAR_FRACTIONS[m.group(2)] + " ", text)
    text = _strip_accents(unicodedata.normalize("NFKC", text)).replace("⁄", "/")
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"').replace("–", "-")
    text = text.replace("—", ", ").replace("…", "...")
    # URLs and e-mail addresses first: their dots and slashes are not sentence punctuation.
    text = re.sub(r"\b(?:https?://|ftp://|www\.)[^\s]+[^\s.,;:!?)]", lambda m: _spoken_url(m.group(0)), text)
    text = re.sub(rf"(?<![\w.@/-])[A-Za-z\d][\w-]*(?:\.[\w-]+)*\.(?:{_DOMAIN_ENDINGS})\b(?:/[^\s]*[^\s.,;:!?)])?",
                  lambda m: _spoken_url(m.group(0)), text)   # a bare domain ("example.com/help")
    # (?<!...): an address starts where its characters do; tried from inside a long run, the match is quadratic
    text = re.sub(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", lambda m: _spoken_url(m.group(0)), text)
    # a phone number written with dots ("555.123.4567") is digits, not a version
    text = re.sub(r"(?<![\d.])\d{3}\.\d{3}\.\d{4}(?![\w.]?\d)",
                  _phone_digits, text)
    # a version: "v1.2.3", "version 2.10.1", "release 3.0.12" (never a date, whatever its parts)
    text = re.sub(r"(?<![\w.])(?:[Vv](?=\d+\.\d)|([Vv]ersion|[Rr]elease)\s+(?=\d+\.\d+\.\d))"
                  r"(\d+(?:\.\d+)+)(?![\w.]?\d)", _version, text)
    # Three or more dotted parts are a version ("3.12.1": three point twelve point one) or an IP address.
    text = re.sub(r"(?<![\d.])\d+(?:\.\d+){2,}(?![\w.]?\d)", lambda m: " " + _dotted_number(m), text)
    text = re.sub(r"\b([A-G])#(?!\w)", r"\1 sharp", text)   # "C#", "F# minor"; else "#" is "number"
    # "#MeToo", "#Go-Team"; "#A123" and "#A-998" are numbers
    text = re.sub(r"(?<![\w&#])#([A-Za-z]+)\b(?!-[A-Z\d-]*\d)", r"hashtag \1", text)
    text = re.sub(r"(?<![\w&#])#(\d{4,})\b(?![.,]\d)", lambda m: f"number {_digits(m.group(1))}", text)   # "#48213"
    # an order or ticket number of capitals and digits ("#A-99812", "#B12"), spelled as a code is
    text = re.sub(r"(?<![\w&#])#(?=[A-Z\d-]*[A-Z])(?=[A-Z\d-]*\d)([A-Z\d]+(?:-[A-Z\d]+)*)(?![\w-])",
                  lambda m: "number " + _code(m, always=True), text)
    # a code of capitals and digits with hyphens ("XK7-99P", "INV-2026-0042"), before the ranges and dates
    text = re.sub(r"(?<![\w-])(?=[A-Z\d-]*[A-Z])(?=[A-Z\d-]*\d)[A-Z\d]+(?:-[A-Z\d]+)+(?![\w-])", _code, text)
    # or with none, where letters and digits alternate ("1Z999AA10123456784", "A1B2C3"; not "MP3" or "RTX4090")
    text = re.sub(r"(?<![\w-])[A-Z\d]{5,}(?![\w-])",
                  lambda m: _code(m) if len(re.findall(r"[A-Z]+|\d+", m.group(0))) >= 3 else m.group(0), text)
    text = re.sub(r"\b((?:[Pp]ress|[Hh]it|[Tt]ap|[Dd]ial)\s+)((?:(?:[*#\d]+|then|or|and)(?:\s+|(?=[,.;:!?]|$)))+)",
                  _keypad, text)   # "press * then #", "dial *72"
    text = re.sub(r"\b([A-Z]\w*)\s+>\s+(?=[A-Z])", r"\1, then ", text)   # a menu path: "Settings > Privacy"
    text = re.sub(r"(\d\s?[AaPp]\.?[Mm]\b\.?)\s?-\s?(?=\d)", r"\1 to ", text)   # "10am-2pm", "3 p.m.-5 p.m."
    # an hour with no minutes: "5pm", "10 AM" ("am" alone would be read as the word)
    text = re.sub(r"(?<![:\d])(\d{1,2})\s?([AaPp])\.?[Mm]\b(\.(?=\s*$|\s+[A-Z]))?\.?",
                  lambda m: f"{m.group(1)} {_spelled(m.group(2) + 'm')}" + ("." if m.group(3) else ""), text)
    text = re.sub(r"(\b[Aa]t\s+)?(?<![\d:])\b(\d{1,2}):([0-5]\d):([0-5]\d)(?![\d:])", _clock_duration, text)
    text = re.sub(r"\b(\d{1,2}:\d{2})\s?-\s?(?=\d{1,2}:\d{2}\b)", r"\1 to ", text)   # "9:00-17:00"
    text = re.sub(r"\b(\d{1,2}):(\d{2})(?:\s*([AaPp]\.?[Mm]\b(?:\.(?=\S))?))?(?![\d:])", _time, text)
    for written, spoken in LATIN.items():
        text = re.sub(re.escape(written), spoken, text, flags=re.IGNORECASE)
    text = re.sub(rf"\b({'|'.join(SHORTHANDS)})\b", lambda m: SHORTHANDS[m.group(1)], text)
    text = re.sub(r"\b((?:[A-Za-z]\.){2,})(\s*$)?", _dotted_acronym, text)
    text = _REGNAL_NUMERAL.sub(lambda m: f"{m.group(1)}the {num2words(_roman(m.group(2)), to='ordinal')}", text)
    text = _COUNTED_NUMERAL.sub(lambda m: f"{m.group(1)} {_roman(m.group(2))}", text)
    text = re.sub(r"\b[Nn]o\.\s*(?=\d)", "number ", text)
    text = re.sub(r"\bWW(II?)\b", lambda m: f"world war {'two' if m.group(1) == 'II' else 'one'}", text)
    # "St." before a name is a saint ("St. Paul"), at the end of an address a street ("Paul St.", "Main St., ...")
    text = re.sub(r"\bSt\.(\s*$)?(?=\s*$|\s+[a-z\d]|\s*[,;:!?)])", lambda m: "street" + ("." if m.group(1) is not None
                  else ""), text)
    # A number to call is said digit by digit ("call 911", "dial 999"); a year before 1100 as a year ("in 1066")
    text = re.sub(r"\b([Cc]all|[Dd]ial|[Tt]ext)\s+(\d{3,})\b(?![.,-]\d)",
                  lambda m: f"{m.group(1)} {_digits(m.group(2))}", text)
    text = re.sub(r"\b([Ii]n|[Yy]ear|[Ss]ince|[Uu]ntil|AD)\s+(10\d\d)\b(?![.,]\d)",
                  lambda m: f"{m.group(1)} {_year(int(m.group(2)))}", text)
    text = re.sub(r"\b(\d{4})-(\d{2})-(\d{2})\b", _iso_date, text)
    month_names = "|".join(MONTHS + [m.capitalize() for m in MONTHS] + [a.capitalize() + r"\.?" for a in _MONTH_ABBR])
    weekdays = "|".join(w.capitalize() for w in _WEEKDAY_ABBR)   # "Tue., Jan. 5": only before a date
    text = re.sub(rf"\b({weekdays})\.?\s?-\s?({weekdays})\b(?:\.(?=\s+[a-z]))?",   # "Mon-Fri": monday to friday
                  lambda m: f"{_WEEKDAY_ABBR[m.group(1).lower()]} to {_WEEKDAY_ABBR[m.group(2).lower()]}", text)
    # ("Mon, Dec 7th" with no period too, where a month and a day follow)
    text = re.sub(rf"\b({weekdays})(?:\.(?=,?\s+(?:\d|{month_names}))|(?=,?\s+(?:{month_names})\s+\d)"
                  rf"|(?=,?\s+\d{{1,2}}/\d{{1,2}}\b))",
                  lambda m: _WEEKDAY_ABBR[m.group(1).lower()], text)
    text = re.sub(rf"\b({month_names})\s+(\d{{1,2}})(?:st|nd|rd|th)?\b", _month_day, text)
    text = re.sub(r"(?<=\d)\s?-\s?(?=[$£€¥]\s?\d)", " to ", text)   # "$10-$20"
    text = re.sub(r"(?<![\w.])-(?=[$£€¥]\s?\d)", "minus ", text)   # "-$23.50"
    per_words = "|".join(PER_WORDS)
    text = re.sub(rf"(?<=[\d%kKmMbB])\s?/\s?({per_words})\b", lambda m: f" per {PER_WORDS[m.group(1).lower()]}", text,
                  flags=re.I)   # "$15.99/month", "2/day"
    # a rating ("4.5/5 stars", "rated 8/10"): out of, not a fraction
    text = re.sub(r"(?<![\d/.,])(\d+(?:\.\d+)?)\s?/\s?(5|10|100)\b(?=\s+stars?\b)", r"\1 out of \2", text)
    text = re.sub(r"\b([Rr]ated|[Rr]ate\s+(?:it|us|this|them)|[Gg]ive\s+(?:it|us|this)|[Gg]ave\s+(?:it|us|this)"
                  r"|[Ss]cored|[Ss]core:?|[Rr]ating(?:\s+of|:)?)\s+(\d+(?:\.\d+)?)\s?/\s?(\d+)\b(?![/.]\d)",
                  r"\1 \2 out of \3", text)
    # a code, PIN or password of digits is said digit by digit ("your PIN is 4821", "code: 123456")
    # ("code is 482-913": each group of a hyphenated one too, with a pause between)
    text = re.sub(r"\b((?:PIN|pin|OTP|[Pp]asscode|[Cc]ode|[Pp]assword)\s*(?:(?:is|:|=)\s*)?)(\d{3,12}(?:-\d{2,12})*)\b"
                  r"(?![.,-]\d)", lambda m: m.group(1) + ", ".join(_digits(g) for g in m.group(2).split("-")), text)
    # an address's abbreviation before its number with no period ("Apt 5C", "Ste 200"), as with one ("Apt. 5C")
    text = re.sub(r"\b(Apt|Ste|Rm|Bldg|Dept)(?=\s+\d)", lambda m: ABBREVIATIONS[m.group(1).lower()], text)
    codes = "|".join(CURRENCY_CODES)   # "USD 50", "50 EUR": the sign's amount rule below says them
    text = re.sub(rf"\b({codes})\s?({_NUMBER})\b|\b({_NUMBER})\s?({codes})\b",
                  lambda m: f"{CURRENCY_CODES[m.group(1) or m.group(4)]}{m.group(2) or m.group(3)}", text)
    text = re.sub(rf"([$£€¥])\s?({_NUMBER})(?:\s+(thousand|million|billion|trillion)\b|(?:([kKmMbB]|bn)\b))?",
                  lambda m: " " + _currency(m), text)   # " ": "US$3" is "u s three dollars"
    # A range between two numbers ("1914-18", "pages 10-20", "won 3-2") is said with "to", not "minus";
    # a phone number ("555-123-4567") is said digit by digit.
    # (with the country code 1 before an area code: "1-800-555-0199", "+1 (555) 123-4567")
    text = re.sub(r"(?:(?<![\w+-])\+?1[-\s](?=\(?\d{3}\)?[-\s]?\d{3}-))?"
                  r"(?:\(\d{3}\)\s?|\b\d{3}-)?\b\d{3}-\d{4}\b", _phone_digits, text)
    text = re.sub(r"°\s?([CF])\b", lambda m: " degrees " + ("celsius" if m.group(1) == "C" else "fahrenheit"), text)
    text = re.sub(r"\b(\d)'\s?(\d{1,2})(?:\"|'')", r"\1 foot \2", text)   # a height: 5'10"
    text = re.sub(r"(?:(?<=\s)|^)\.(\d+)\b", lambda m: "point " + _digits(m.group(1)), text)   # ".5"
    text = re.sub(r"\b(\d+)\s?h\s?(\d+)\s?m(?:in)?\b", r"\1 h \2 min", text)   # "3h 45m": minutes, not meters
    # "2in" joined to its number is inches ("6ft 2in"); "2 in" stays the word
    text = re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)in\b", lambda m: f"{m.group(1)} inch{'' if m.group(1) == '1' else 'es'}",
                  text)
    # a video resolution is said in pairs, as a year is ("1080p": ten eighty p, "720p": seven twenty p)
    text = re.sub(r"\b(240|360|480|576|720|1080|1440|2160|4320)([pi])\b",
                  lambda m: f"{_year(int(m.group(1)))} {m.group(2)}", text)
    text = re.sub(rf"(?<![\d/.,])(?<!\d\s)(\d{{1,2}})/(\d{{1,3}})\s?({_UNIT_PATTERN})(?![\w/])", _fraction_of_unit,
                  text)   # "3/4 tsp": three quarters of a teaspoon ("1 1/2 tsp" is teaspoons, below)
    # a scale joined to a bare number ("1.5M users", "£2bn" is the currency's): before the units, whose "m" is
    # metres; "4B" (a flat) and "4K" (a screen) stay letters
    text = re.sub(rf"(?<![\w.,])({_NUMBER})(M|\s?bn)\b",
                  lambda m: f"{m.group(1)} {'million' if m.group(2) == 'M' else 'billion'}", text)
    text = re.sub(rf"(\b[Aa]n?\s+)?(?<![\w.,])({_NUMBER})\s?({_UNIT_PATTERN})(?:/({_UNIT_PATTERN}))?(?![\w/])",
                  _unit, text)
    text = re.sub(r"(?<![\w.])x(\d(?:\.\d+)?)(?![\w.]?\d)", r"times \1", text)   # "x2 speed", "x1.5"; not "x86"
    text = re.sub(r"(\w+)\s?\^\s?(-?\d+(?:\.\d+)?)", r"\1 to the power of \2", text)   # "10^3", "x^2"
    text = re.sub(r"(\d)\s?x(?=\s|$|[,.;:!?])", r"\1 times", text)    # "3x faster"
    text = re.sub(r"(\d)x(\d)", r"\1 by \2", text)                  # "4x4"
    text = re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", _slash_date, text)
    text = re.sub(r"(?<![\d/.,])(\d+)\s+(\d{1,2}/\d{1,2})(?![\d/]|\.\d)", _mixed_number, text)   # "1 1/2 cups"
    text = re.sub(rf"\b([Oo]n|[Uu]ntil|[Ff]rom|[Ss]ince|[Bb]efore|[Aa]fter|{_WEEKDAYS}),?\s+(\d{{1,2}})/(\d{{1,2}})\b"
                  r"(?![/\d])", _dated, text)   # "on 3/15": a date (month first); "from 1/2" stays a fraction
    # a part with a leading zero makes a pair a date, never a fraction ("as of 12/06", "06/12")
    text = re.sub(r"(?<![\d/.,])(?=0\d/|\d\d?/0\d)(\d\d?)/(\d\d?)(?![\d/]|\.\d)",
                  lambda m: _pair_as_date(m.group(1), m.group(2)) or m.group(0), text)
    text = re.sub(r"(?<![\d/.,])(\d+)/(\d+)(?![\d/]|\.\d)", _fraction, text)
    # A number written with a leading zero is a code ("007", "02139", "RHSA-1999:030-01"): digit by digit.
    text = re.sub(r"((?<![\w.])-)?(?<![\d,.])\b0\d+\b(?!\.\d)",
                  lambda m: ("minus " if m.group(1) else "") + _digits(m.group(0).lstrip("-")),
                  text)
    text = re.sub(r"(?<![\d:])(\d+):(\d+)(?![\d:])", r"\1 to \2", text)   # a ratio ("3:2"); times are read above
    text = re.sub(rf"(?<![\d,.-])({_NUMBER})\s?-\s?({_NUMBER})(?![\d-]|\.\d)", r"\1 to \2", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _integer_words(m.group(1), ordinal=True), text)
    text = re.sub(r"(\d)\s?%", r"\1 percent", text)
    text = re.sub(r"\b(1[1-9]\d\d|20\d\d)'?s\b", lambda m: _decade(int(m.group(1))), text)
    text = re.sub(r"(?<![\w,.-])'?([2-9]0)'?s\b", lambda m: _decade(int(m.group(1))), text)   # "the '80s"
    text = re.sub(r"(?<![\d,.])\b(1[1-9]\d\d|20\d\d)\b(?![\d,]|\.\d)", lambda m: _year(int(m.group(1))), text)
    # capitals joined to four or more digits are an identifier ("#A12345", "XJ9000"), said character by character
    text = re.sub(r"\b([A-Z]{1,3})(\d{4,})\b", lambda m: f"{_spelled(m.group(1))} {_digits(m.group(2))}", text)
    text = re.sub(r"(?<=[A-Za-z])(?=\d)", " ", text)   # a number joined to a word: "Linux8086", "MP3"
    # A sign only where no word or number is joined to it ("thirty-three-70" is not minus seventy); the space
    # after a number keeps it off a following word ("5kg"), not off a joined hyphen or "'s" ("9-year-old", "1920's").
    text = re.sub(rf"(?:(?<![\w.])-)?{_NUMBER}(?=([-']?))",
                  lambda m: ("minus " if m.group(0).startswith("-") else "") + _number_words(m.group(0).lstrip("-"))
                  + ("" if m.group(1) else " "), text)
    # "MT. Everest", "DR. SMITH": a title in capitals is the title, not letters
    text = re.sub(r"\b(MR|MRS|MS|DR|MT|ST)\.(?=\s+[A-Z])", lambda m: ABBREVIATIONS[m.group(1).lower()], text)
    text = re.sub(r"\b[A-Z]{2,6}s?\b", _acronym, text)
    text = re.sub(r"\b(Mr|Mrs|Ms|Dr)(?=\s+[A-Z])", lambda m: ABBREVIATIONS[m.group(1).lower()], text)   # "Mr Smith"
    text = re.sub(r"\b([A-Za-z]+)\.(?=\s+(\S)|$|([,;:!?)]))", _abbreviation, text)
    for sym, word in SYMBOLS.items():
        text = text.replace(sym, word)
    for sym, (_, many, _, _) in CURRENCIES.items():   # a sign with no amount: "paid in $" -> "dollars"
        text = text.replace(sym, f" {many} ")
    text = text.lower().replace('"', "").replace("(", ", ").replace(")", ", ").replace("[", ", ").replace("]", ", ")
    allowed = set("abcdefghijklmnopqrstuvwxyz " + KEEP_PUNCTUATION)
    dropped = sorted({c for c in text if c not in allowed and not c.isspace()})
    if dropped:
        log.warning("dropped unsupported characters: %s", " ".join(repr(c) for c in dropped))
    text = "".join(c if c in allowed else " " for c in text)
    text = re.sub(r"\s+", " ", text)   # first: "\s+," from every start of a long blank run is quadratic
    text = re.sub(r" ([,.?!;:])", r"\1", text)
    text = re.sub(r"[,;:]\s*(?=[.?!](?!\.))", "", text)   # "(incl. tax)." left ", ."; ": ..." keeps its colon
    text = re.sub(r"([,;:])[,;:\s]*", r"\1 ", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;:")
    return text
