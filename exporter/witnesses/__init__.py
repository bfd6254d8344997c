"""What others say: the provider's status page, the clouds it runs on (``dependencies:``) and
other people's live traffic to the same models (``crowd:``).

One module per feed: statuspage, gcp, aws, azure (dependencies), openrouter (crowd). ``feed``
holds the one HTTP fetch and the shared polling path; ``probers`` the probers of the feed kinds.
"""
