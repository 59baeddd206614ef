"""Chat models as mimics: a task rendered as a conversation (:mod:`harness.chat.messages`), the rendering
a model gets (:mod:`harness.chat.renderings`), and the item parsed back out of a chat answer (:mod:`harness.chat.parse`)."""
