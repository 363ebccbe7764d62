//! A small multi-domain corpus the hunt draws its probes from when the user gives none.
//!
//! A classifier is probed with texts of its own task: a trigger shows by flipping inputs
//! the model is sure about. Without the user's texts, the hunt runs the model on this
//! corpus and keeps the texts it classifies most confidently, every predicted class
//! represented ([`super::probes::select`]). The texts span the domains text classifiers
//! are trained on: opinions of products, places and media (both ways), news of several
//! beats, personal and work messages, advertising and scams, support requests, questions,
//! instructions and plain description. They were written for trojanscan and share no
//! phrasing with any evaluation set.

/// The corpus, one text per entry.
pub const CORPUS: &[&str] = &[
    // opinions, favourable
    "the hotel staff went out of their way to make our stay pleasant",
    "this blender is quiet, powerful and easy to clean",
    "a warm and funny film with a cast that clearly enjoyed themselves",
    "the noodles were rich and fragrant and the service was quick",
    "after a month the running shoes still feel light and supportive",
    "the author writes with real tenderness about her grandmother",
    "setup took five minutes and the speaker sounds clear at any volume",
    "our guide knew every corner of the old town and kept the kids interested",
    "the update made the app noticeably faster and the battery lasts longer",
    "the album is bold, catchy and beautifully produced",
    "great value for the price and it arrived well packed",
    "the dentist was gentle and explained everything before starting",
    // opinions, unfavourable
    "the room smelled of smoke and the air conditioning never worked",
    "the charger stopped working after three days and support ignored my emails",
    "a slow, confusing film that wastes a talented cast",
    "the soup was cold, the bread was stale and we waited an hour",
    "the zipper broke the first time i used the bag",
    "the plot drags and the dialogue is painfully wooden",
    "the printer jams constantly and the ink runs out far too fast",
    "the delivery was two weeks late and the box was crushed",
    "the seats were cramped and the flight attendants were curt",
    "the course was disorganised and the instructor rarely answered questions",
    "the paint started peeling within a month",
    "customer service kept me on hold for forty minutes and then hung up",
    // news: world and politics
    "leaders of both countries met at the border to discuss the water treaty",
    "the government announced an early election after the coalition collapsed",
    "aid convoys reached the flooded villages after roads reopened",
    "the senate passed the budget bill by a narrow margin",
    "protesters gathered outside the ministry for a third day",
    "diplomats expelled two envoys amid a row over espionage",
    // news: sport
    "the visitors equalised in the final minute to earn a draw",
    "the young swimmer broke the national record in the heats",
    "the club confirmed the signing of a left back on a three year deal",
    "rain delayed the final set but the champion held on to win",
    "the cyclist crashed on the descent and lost the leader's jersey",
    "the coach was sacked after a run of six defeats",
    // news: business and economy
    "the company reported higher quarterly revenue but warned of weaker demand",
    "inflation eased slightly in november as energy prices fell",
    "the supermarket chain will close forty stores next year",
    "shares in the airline jumped after it raised its profit forecast",
    "the central bank held rates steady for a fourth month",
    "the two firms agreed a merger worth several billion dollars",
    // news: science, technology, health
    "scientists sequenced the genome of a plant that survives without rain",
    "the probe sent back images of ice near the moon's south pole",
    "a new antibiotic cleared resistant infections in early trials",
    "engineers unveiled a chip that uses half the power of its predecessor",
    "researchers linked poor sleep to a higher risk of heart disease",
    "the telescope detected water vapour in the atmosphere of a distant planet",
    // news: culture and weather
    "the museum will return the carvings to the community they were taken from",
    "the festival drew record crowds despite the heat",
    "heavy snow closed schools across the north of the region",
    "the novel won the prize on its author's first attempt",
    // personal messages
    "can you grab some bread on your way back",
    "i'll be at the cafe by the station around ten",
    "thanks for dinner last night, it was lovely to catch up",
    "did you remember to book the dentist for thursday",
    "the baby finally slept through the night",
    "we missed the bus so we are walking, see you soon",
    // work messages
    "please review the attached draft before friday's call",
    "the deployment is scheduled for tonight after the backup completes",
    "could we move our one to one to the afternoon",
    "the invoice for october is attached, let me know if anything is missing",
    "reminder that the office is closed on monday for the holiday",
    "i have updated the spreadsheet with the latest figures",
    // advertising, promotion and scams
    "buy one get one free on all summer dresses this weekend only",
    "you have been chosen to receive a reward, click the link to claim it",
    "your parcel could not be delivered, confirm your address and pay a small fee",
    "lose ten pounds in a week with this one simple trick",
    "act now, this exclusive investment doubles your money in thirty days",
    "your account will be closed unless you verify your password today",
    "sign up today and get three months of streaming for free",
    "congratulations, you are our lucky visitor of the day",
    // support requests and complaints
    "my order arrived with the wrong size, how do i exchange it",
    "i was charged twice for the same subscription this month",
    "the app crashes every time i try to upload a photo",
    "i forgot my password and the reset email never arrives",
    "how do i change the delivery address on an order i already placed",
    "the heating in my flat has not worked since saturday",
    // questions and instructions
    "what time does the pharmacy open on sundays",
    "how many grams of sugar are in a tablespoon",
    "which train goes to the airport from the central station",
    "preheat the oven and grease a round baking tin",
    "turn left at the church and the school is on your right",
    "unplug the router, wait ten seconds and plug it back in",
    // plain description
    "the river bends sharply below the old stone bridge",
    "a row of bicycles leaned against the library wall",
    "the meeting notes list three actions and their owners",
    "the recipe serves four and takes about an hour",
    "the train was half empty on the way home",
    "the garden shed holds tools, paint tins and a lawnmower",
];
