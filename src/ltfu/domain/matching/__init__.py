"""Patient matching: normalise, block, score (Fellegi–Sunter), grade. Pure; the index lives in the store."""

from ltfu.domain.matching.blocking import index_keys, query_keys
from ltfu.domain.matching.config import MatchConfig
from ltfu.domain.matching.matcher import GRADES, match
from ltfu.domain.matching.records import Candidate, FieldScore, MatchResult, Person

__all__ = [
    "GRADES",
    "Candidate",
    "FieldScore",
    "MatchConfig",
    "MatchResult",
    "Person",
    "index_keys",
    "match",
    "query_keys",
]
