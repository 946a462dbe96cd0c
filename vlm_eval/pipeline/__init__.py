"""The Ray Data plan: work units -> image loading -> engine actors -> committed shards."""
