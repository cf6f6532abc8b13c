"""Input and output shapes of the REST API. Validation of types and formats
lives here; rules (who may do what) live in chat.services."""

from rest_framework import serializers

from chat import protocol
from chat.audit import REASON_MAX_LENGTH
from chat.models import BODY_MAX_LENGTH, CLIENT_ID_MAX_LENGTH, Membership, Message, Room


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class RoomSerializer(serializers.ModelSerializer):
    member_count = serializers.IntegerField(read_only=True)
    my_role = serializers.ChoiceField(
        choices=Membership.Role.choices, read_only=True, allow_null=True
    )

    class Meta:
        model = Room
        fields = ["slug", "name", "description", "is_private", "is_locked", "is_archived"]
        fields += ["created_at"]
        fields += ["member_count", "my_role"]
        read_only_fields = fields


class RoomCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=50, required=False, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    is_private = serializers.BooleanField(required=False, default=False)


class RoomUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    is_private = serializers.BooleanField(required=False)


class AuthorityField(serializers.CharField):
    """Who made a ban or a mute, and so who may undo it; null for none."""

    def to_representation(self, value: str) -> str | None:
        return value or None


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    mute_authority = serializers.SerializerMethodField()
    ban_authority = AuthorityField(read_only=True, allow_null=True)

    class Meta:
        model = Membership
        fields = ["username", *Membership.SHOWN]
        read_only_fields = fields

    def get_mute_authority(self, membership: Membership) -> str | None:
        """Who set the running mute; null when none runs (an ended one binds nobody)."""
        return (membership.mute_authority or None) if membership.is_muted else None


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(
        choices=[Membership.Role.MEMBER, Membership.Role.MODERATOR],
        default=Membership.Role.MEMBER,
    )


class MessageSerializer(serializers.ModelSerializer):
    """A message exactly as the socket shows it (chat.protocol.message_payload)."""

    room = serializers.SlugField()
    user = serializers.CharField()
    created = serializers.DateTimeField()
    client_id = serializers.CharField(allow_null=True)

    class Meta:
        model = Message
        fields = ["id", "seq", "room", "user", "body", "created", "client_id"]
        read_only_fields = fields

    def to_representation(self, instance: Message) -> dict:
        return protocol.message_payload(instance)


class MessageCreateSerializer(serializers.Serializer):
    # Length and emptiness are the service's rules, shared with the socket
    # (body_too_long, empty_body); DATA_UPLOAD_MAX_MEMORY_SIZE bounds the rest.
    body = serializers.CharField(
        trim_whitespace=False,
        allow_blank=True,
        help_text=f"1 to {BODY_MAX_LENGTH} characters once trimmed.",
    )
    client_id = serializers.CharField(
        max_length=CLIENT_ID_MAX_LENGTH, required=False, allow_null=True, default=None
    )


class HistoryQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(min_value=0, required=False)
    after = serializers.IntegerField(min_value=0, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=100, required=False)
    cursor = serializers.CharField(required=False)

    def validate(self, attrs: dict) -> dict:
        if "before" in attrs and "after" in attrs:
            raise serializers.ValidationError("Give 'before' or 'after', not both.")
        return attrs


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=REASON_MAX_LENGTH
    )


class LockSerializer(ReasonSerializer):
    locked = serializers.BooleanField()


class ArchiveSerializer(ReasonSerializer):
    archived = serializers.BooleanField()


class MuteSerializer(ReasonSerializer):
    until = serializers.DateTimeField(allow_null=True, help_text="null unmutes")
