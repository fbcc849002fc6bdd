# frozen_string_literal: true

class Comment < ApplicationRecord
  belongs_to :tenant
  belongs_to :commentable, polymorphic: true
  belongs_to :user, optional: true
end
