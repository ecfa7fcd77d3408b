"""Quality scoring: a classifier of reference text against raw crawl (train.py, model.py), the score stage that
writes its probability into every document (stage.py), and the keep rules the mixing stage applies (rules.py)."""
