"""Unit tests of the fraud rules: `python3 -m unittest test_rules.py` (no Wasm needed)."""

import unittest

import rules


class ParseTest(unittest.TestCase):
    def test_accepts_string_and_number_ids(self):
        auction = rules.parse_auction_ended(
            b'{"auction_id": 7, "winning_bidder_id": "b1", "winning_price": 12.5}'
        )
        self.assertEqual(auction, rules.AuctionEnded("7", "b1", 12.5))

    def test_rejects_bad_data(self):
        for data in [b"not json", b"[]", b'{"auction_id": "a", "winning_bidder_id": "b"}',
                     b'{"auction_id": " ", "winning_bidder_id": "b", "winning_price": 1}',
                     b'{"auction_id": "a", "winning_bidder_id": "b", "winning_price": true}']:
            with self.assertRaises(rules.BadEvent, msg=data):
                rules.parse_auction_ended(data)


class CheckTest(unittest.TestCase):
    def test_clean_auction(self):
        verdict = rules.check(rules.AuctionEnded("a", "b", 100), 1, rules.Limits())
        self.assertFalse(verdict.suspicious)

    def test_price_and_wins_rules(self):
        limits = rules.parse_limits("1000", "2")
        verdict = rules.check(rules.AuctionEnded("a", "b", 1500), 3, limits)
        self.assertEqual(len(verdict.reasons), 2)
        self.assertIn(b'"suspicious":true', verdict.to_json())


if __name__ == "__main__":
    unittest.main()
