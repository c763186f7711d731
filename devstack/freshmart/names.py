"""Word lists the seeder and load generator draw realistic values from.

Data only. Emails use the reserved example.* domains (RFC 2606) so no generated
address can ever reach a real mailbox.
"""

from __future__ import annotations

__all__ = [
    "EMAIL_DOMAINS",
    "FIRST_NAMES",
    "LAST_NAMES",
    "PRODUCTS",
    "STATE_CODE",
    "STORE_NEIGHBOURHOODS",
    "STREET_NAMES",
    "STREET_SUFFIXES",
    "ZONES",
]

# fmt: off
FIRST_NAMES = (
    "Aaliyah", "Aaron", "Abigail", "Adam", "Adrian", "Aisha", "Alejandro", "Alex", "Alice",
    "Amara", "Amelia", "Ana", "Andre", "Andrew", "Angela", "Anthony", "Aria", "Arjun",
    "Ava", "Benjamin", "Bianca", "Brandon", "Brianna", "Caleb", "Camila", "Carlos",
    "Carmen", "Charlotte", "Chen", "Chloe", "Christopher", "Claire", "Daniel", "David",
    "Deepa", "Diego", "Dmitri", "Elena", "Eli", "Elijah", "Elizabeth", "Emily", "Emma",
    "Ethan", "Fatima", "Felix", "Gabriel", "Grace", "Hannah", "Hiro", "Ian", "Imani",
    "Isaac", "Isabella", "Jack", "Jacob", "James", "Jamal", "Jasmine", "Javier", "Jin",
    "Jordan", "Jose", "Joseph", "Julia", "Kai", "Kenji", "Khalid", "Laila", "Lauren",
    "Leo", "Liam", "Lucas", "Lucia", "Maya", "Mei", "Mia", "Michael", "Mohammed", "Naomi",
    "Nathan", "Nia", "Noah", "Olivia", "Omar", "Priya", "Rafael", "Rahul", "Rosa",
    "Ryan", "Samuel", "Sara", "Sofia", "Sophia", "Tariq", "Thomas", "Valentina", "Wei",
    "William", "Yara", "Yuki", "Zara", "Zoe",
)

LAST_NAMES = (
    "Adams", "Ahmed", "Alvarez", "Anderson", "Bailey", "Baker", "Banerjee", "Bennett",
    "Brooks", "Brown", "Campbell", "Carter", "Castillo", "Chang", "Chen", "Clark",
    "Collins", "Cooper", "Cruz", "Davis", "Diaz", "Edwards", "Evans", "Fernandez",
    "Fischer", "Flores", "Foster", "Garcia", "Gomez", "Gonzalez", "Gray", "Green",
    "Gupta", "Hall", "Harris", "Hernandez", "Hill", "Hughes", "Ito", "Jackson", "James",
    "Johnson", "Jones", "Kelly", "Khan", "Kim", "King", "Kowalski", "Lee", "Lewis",
    "Lopez", "Martin", "Martinez", "Mehta", "Miller", "Mitchell", "Moore", "Morales",
    "Morgan", "Murphy", "Nakamura", "Nelson", "Nguyen", "Novak", "Okafor", "Ortiz",
    "Park", "Patel", "Perez", "Peterson", "Phillips", "Price", "Ramirez", "Reed",
    "Reyes", "Richardson", "Rivera", "Roberts", "Robinson", "Rodriguez", "Rossi",
    "Sanchez", "Sato", "Schmidt", "Scott", "Shah", "Singh", "Smith", "Stewart",
    "Sullivan", "Tanaka", "Taylor", "Thomas", "Thompson", "Torres", "Turner", "Walker",
    "Wang", "Ward", "Watson", "White", "Williams", "Wilson", "Wright", "Yamamoto",
    "Young", "Zhang",
)

EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

STREET_NAMES = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Willow", "Birch", "Chestnut", "Walnut",
    "Spruce", "Magnolia", "Sycamore", "Hawthorn", "Juniper", "Laurel", "Aspen",
    "Washington", "Lincoln", "Jefferson", "Madison", "Franklin", "Adams", "Monroe",
    "Jackson", "Park", "Lake", "Hill", "River", "Spring", "Meadow", "Forest", "Sunset",
    "Highland", "Ridge", "Valley", "Garden", "Orchard", "Harbor", "Bay", "Mill",
    "Church", "School", "Market", "Center", "Union", "Liberty", "Prospect", "Grove",
    "Summit", "Fairview", "Riverside", "Lakeview", "Broad", "Front", "Water", "Bridge",
    "King", "Queen", "Railroad", "Academy",
)

STREET_SUFFIXES = ("St", "Ave", "Blvd", "Rd", "Ln", "Dr", "Ct", "Pl", "Way", "Ter")

# Five delivery zones of one metro area; each zone lists (city, ZIP prefix) pairs.
ZONES: dict[str, tuple[tuple[str, str], ...]] = {
    "north": (("Northbrook", "600"), ("Glenview", "600"), ("Evanston", "602")),
    "south": (("Oak Lawn", "604"), ("Blue Island", "604"), ("Harvey", "604")),
    "east": (("Lakeshore", "606"), ("Harbor Point", "606"), ("Streeterville", "606")),
    "west": (("Oak Park", "603"), ("Berwyn", "604"), ("Elmhurst", "601")),
    "central": (("Midtown", "606"), ("Old Town", "606"), ("Union Square", "606")),
}
STATE_CODE = "IL"

STORE_NEIGHBOURHOODS = (
    "Market Square", "Riverside", "Old Mill", "Lakeside", "Union Station", "Park Ridge",
    "Fairview", "Harbor", "Highland", "Crossroads", "Village Green", "Summit",
    "Orchard Plaza", "Canal Street", "Meadowbrook", "Prospect Heights", "Brookfield",
    "Cedar Commons", "Water Tower", "Gateway",
)

# (product, unit price in cents)
PRODUCTS: tuple[tuple[str, int], ...] = (
    ("Organic Bananas (bunch)", 199), ("Hass Avocados (4 ct)", 549),
    ("Gala Apples (3 lb bag)", 449), ("Strawberries (1 lb)", 399),
    ("Blueberries (6 oz)", 349), ("Baby Spinach (5 oz)", 329),
    ("Romaine Hearts (3 ct)", 379), ("Roma Tomatoes (1 lb)", 179),
    ("Yellow Onions (3 lb bag)", 299), ("Russet Potatoes (5 lb bag)", 449),
    ("Carrots (2 lb bag)", 229), ("Broccoli Crowns (1 lb)", 249),
    ("Red Bell Peppers (2 ct)", 399), ("Lemons (4 ct)", 299), ("Garlic (3 ct)", 149),
    ("Whole Milk (1 gal)", 429), ("Oat Milk (64 oz)", 499),
    ("Greek Yogurt (32 oz)", 599), ("Large Brown Eggs (12 ct)", 479),
    ("Salted Butter (1 lb)", 549), ("Sharp Cheddar (8 oz)", 429),
    ("Fresh Mozzarella (8 oz)", 499), ("Sourdough Loaf", 549),
    ("Whole Wheat Bread", 379), ("Bagels (6 ct)", 449), ("Flour Tortillas (10 ct)", 329),
    ("Boneless Chicken Breast (1 lb)", 699), ("Ground Beef 85% (1 lb)", 649),
    ("Atlantic Salmon Fillet (1 lb)", 1299), ("Thick-Cut Bacon (12 oz)", 749),
    ("Firm Tofu (14 oz)", 279), ("Black Beans (15 oz)", 129),
    ("Chickpeas (15 oz)", 139), ("Jasmine Rice (2 lb)", 399), ("Spaghetti (1 lb)", 199),
    ("Marinara Sauce (24 oz)", 449), ("Extra Virgin Olive Oil (500 ml)", 899),
    ("Peanut Butter (16 oz)", 379), ("Strawberry Jam (12 oz)", 349),
    ("Rolled Oats (42 oz)", 549), ("Granola (12 oz)", 499),
    ("Ground Coffee (12 oz)", 899), ("Green Tea (20 bags)", 349),
    ("Orange Juice (52 oz)", 479), ("Sparkling Water (12 pk)", 599),
    ("Tortilla Chips (13 oz)", 399), ("Dark Chocolate Bar (3.5 oz)", 299),
    ("Vanilla Ice Cream (1.5 qt)", 599), ("Frozen Peas (16 oz)", 229),
    ("Frozen Pizza Margherita", 799), ("Paper Towels (6 rolls)", 1099),
    ("Dish Soap (24 oz)", 399), ("Laundry Detergent (92 oz)", 1399),
    ("Toilet Paper (12 rolls)", 1299), ("Honeycrisp Apples (each)", 129),
    ("Limes (each)", 49), ("Cucumbers (each)", 89), ("Fresh Basil (0.75 oz)", 249),
    ("Hummus (10 oz)", 449), ("Kale Bunch", 229),
)
# fmt: on
